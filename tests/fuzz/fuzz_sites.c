/*
 * Every vendor's site list: the check's answer as enr_check_response() reads
 * it for the vendor of vendors.json that the input's first line names,
 *   sites VENDOR STATUS CONTENT_TYPE   ("-" for no content type)
 * followed by the body (seeds: the recordings of assets/answers, see seeds.py).
 */
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "derenroll/check.h"
#include "derenroll/http.h"
#include "derenroll/log.h"
#include "derenroll/store.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char words[4][FUZZ_WORD_MAX];
	const struct enr_vendor *vendor;
	struct enr_http_response *resp;
	struct enr_check_result *result = NULL;

	fuzz_words(words, 4, &data, &size);
	vendor = fuzz_vendor(words[1]);
	resp = fuzz_response(vendor, strtol(words[2], NULL, 10),
	                     strcmp(words[3], "-") == 0 ? NULL : words[3], data, size);
	if (enr_check_response(&result, vendor, resp) == 0) {
		for (size_t i = 0; i < result->n_sites; i++)
			if (enr_check_find_site(result, result->sites[i].id) == NULL)
				abort();
		enr_check_find_site(result, "");
	}
	enr_check_result_free(result);
	enr_http_response_free(resp);
	enr_log_clear_secrets();
	return 0;
}
