/* Prints every config key core/config.c knows, one "section key secret|plain"
 * a line, for test_docs.sh to hold derenroll.ini(5) to. */
#include <stdio.h>

#include "derenroll/config.h"
#include "config_internal.h"

int main(void)
{
	const char *section, *key;

	for (size_t i = 0; enr_config__known_key(i, &section, &key) == 0; i++)
		printf("%s %s %s\n", section, key,
		       enr_config_is_secret_key(key) ? "secret" : "plain");
	return 0;
}
