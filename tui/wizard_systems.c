/* The wizard's enrolled systems screen (support staff). */
#include "wizard_int.h"

void wiz_systems_open(void)
{
}

void wiz_systems_free(void)
{
}
