/* vendors.json: the catalogue loader (enr_catalog_load_string) and the lookups
 * the rest of the library makes in what it accepted. */
#include <stdlib.h>

#include "common.h"
#include "derenroll/config.h"
#include "derenroll/vendor.h"

static struct enr_config *cfg;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	fuzz_init();
	if (enr_config_new(&cfg) < 0 || enr_config_set(cfg, "vendor.nosuch", "api_url", "x") < 0)
		abort();
	return 0;
}

static void count_warning(const char *msg, void *ctx)
{
	(void)msg;
	++*(size_t *)ctx;
}

static void use_vendor(const struct enr_vendor *v)
{
	static const char *const texts[] = {"", "invalid_grant", "empty_sites", "R0000"};
	static const int statuses[] = {200, 400, 401, 403, 429, 500};

	for (size_t i = 0; i < v->n_methods; i++)
		enr_vendor_method(v, v->methods[i].id);
	enr_vendor_method(v, "nosuch");
	for (size_t i = 0; i < v->n_endpoints; i++) {
		char *url = enr_vendor_url(v, cfg, v->endpoints[i].name, "/sites/");
		free(url);
		enr_vendor_default_endpoint(v, v->endpoints[i].name);
	}
	enr_vendor_endpoint(v, cfg, "api_url");
	enr_vendor_scopes(v, cfg);
	enr_vendor_setting(v, cfg, "client_id");
	for (size_t s = 0; s < sizeof(statuses) / sizeof(statuses[0]); s++)
		for (size_t t = 0; t < sizeof(texts) / sizeof(texts[0]); t++)
			enr_vendor_guidance(v, statuses[s], texts[t]);
	for (size_t i = 0; i < v->n_unconfirmed; i++)
		enr_vendor_unconfirmed(v, v->unconfirmed[i]);
	enr_vendor_unconfirmed(v, "tokens.access_ttl");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct enr_catalog *cat = NULL;
	char *json = fuzz_string(data, size);
	size_t warnings = 0;

	if (enr_catalog_load_string(&cat, json, "fuzz/vendors.json") == 0) {
		for (size_t i = 0; i < enr_catalog_count(cat); i++)
			use_vendor(enr_catalog_at(cat, i));
		enr_catalog_find(cat, "nosuch");
		enr_catalog_check_config(cat, cfg, count_warning, &warnings);
	}
	enr_catalog_free(cat);
	free(json);
	return 0;
}
