#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "derenroll/check.h"
#include "derenroll/config.h"
#include "derenroll/doctor.h"
#include "derenroll/error.h"
#include "derenroll/http.h"
#include "derenroll/join.h"
#include "derenroll/oauth.h"
#include "derenroll/relay.h"
#include "derenroll/store.h"
#include "derenroll/tesla.h"
#include "derenroll/vendor.h"
#include "util.h"

#define STATE_BYTES 16

struct enr_doctor_report {
	struct enr_doctor_result *results;
	size_t n, cap;
};

/* ---- the checks -------------------------------------------------------- */

/* A failure's message, with " (check [section] key)" when it names no setting. */
static int naming(int rc, const char *section, const char *key)
{
	char *msg = NULL, wanted[96];

	snprintf(wanted, sizeof(wanted), "[%s]", section);
	if (strstr(enr_error_last(), wanted))
		return rc;
	msg = enr_util_strdup(enr_error_last());
	enr_error_set(rc, "%s (check [%s] %s)", msg ? msg : enr_error_default_message(rc), section,
	              key);
	free(msg);
	return rc;
}

/* Whether `secret` of the vendor's section can be found (config, file or store). */
static int need_secret(const struct enr_vendor *vendor, const struct enr_config *cfg,
                       const char *key)
{
	char *secret = NULL;
	int rc = enr_vendor_secret(&secret, vendor, cfg, key);

	if (rc == 0 && !secret[0])
		rc = enr_error_set(ENR_E_CONFIG, "[%s] %s is empty", vendor->config_section, key);
	enr_config_free_secret(secret);
	return rc < 0 ? enr_error_set(ENR_E_CONFIG, "%s", enr_error_last()) : 0;
}

/* The app of a vendor without a grant we can try alone (Tesla's partner token
 * comes per region: it goes in its own row of the table). */
static int app_configured(char **note, const struct enr_vendor *vendor,
                          const struct enr_catalog *catalog, const struct enr_config *cfg)
{
	const char *id = enr_vendor_setting(vendor, cfg, "client_id");
	int rc;

	(void)catalog;
	if (!id || !id[0])
		return enr_error_set(ENR_E_CONFIG, "%s needs the company's app: set [%s] client_id",
		                     vendor->name, vendor->config_section);
	if ((rc = need_secret(vendor, cfg, "client_secret")) < 0)
		return rc;
	/* Enphase sends the app's API key on every call. */
	if (vendor->has_check && vendor->check.query_key &&
	    (rc = need_secret(vendor, cfg, "api_key")) < 0)
		return rc;
	*note = enr_util_printf("client ID %s and its secret are set (checked with the first "
	                        "customer)",
	                        id);
	return 0;
}

/* A client-credentials token at token_url with the app's ID and secret. */
static int client_credentials(char **note, const struct enr_vendor *vendor,
                              const struct enr_catalog *catalog, const struct enr_config *cfg)
{
	struct enr_oauth_tokens *tokens = NULL;
	int rc;

	(void)catalog;
	rc = enr_oauth_client_credentials(&tokens, vendor, cfg, NULL);
	enr_oauth_tokens_free(tokens);
	if (rc < 0)
		return naming(rc, vendor->config_section, "client_id and client_secret");
	*note = enr_util_printf("%s gave the app a token", vendor->name);
	return 0;
}

/* Derapi's app token at auth_url. */
static int derapi_token(char **note, const struct enr_vendor *derapi,
                        const struct enr_catalog *catalog, const struct enr_config *cfg)
{
	char *token = NULL;
	int rc;

	(void)catalog;
	if (!enr_join_available(cfg, &token)) {
		rc = enr_error_set(ENR_E_CONFIG, "%s", token ? token : "Derapi is not configured");
		free(token);
		return rc;
	}
	enr_join_token_forget();
	rc = enr_join_app_token(&token, derapi, cfg);
	enr_config_free_secret(token);
	if (rc < 0)
		return naming(rc, "derapi", "auth_url");
	*note = enr_util_strdup("Derapi gave the app a token");
	return 0;
}

/* The redirect URI the oauth method uses: the relay's /callback, a loopback
 * one, or a page showing the code (Enphase's). */
static int redirect_uri(char **note, const struct enr_vendor *vendor,
                        const struct enr_catalog *catalog, const struct enr_config *cfg)
{
	const char *uri = enr_vendor_setting(vendor, cfg, "redirect_uri");
	const char *code_page = enr_vendor_default_endpoint(vendor, "redirect_uri");
	const char *relay = enr_config_get(cfg, "relay", "url");
	size_t len = relay ? strlen(relay) : 0;
	int rc;

	(void)catalog;
	while (len > 0 && relay[len - 1] == '/')
		len--;
	if (!uri)
		uri = code_page;
	if (!uri) {
		*note = len ? enr_util_printf("the relay's %.*s/callback (register it for the app)",
		                              (int)len, relay)
		            : enr_util_strdup("none: customers can only sign in on this computer "
		                              "(set [relay] url for phones)");
		return 0;
	}
	if ((rc = enr_http_check_url(uri)) < 0)
		return enr_error_set(ENR_E_CONFIG, "%s: [%s] redirect_uri: %s", vendor->name,
		                     vendor->config_section, enr_error_last());
	if (len && strncmp(uri, relay, len) == 0 && (uri[len] == '/' || !uri[len])) {
		if (strcmp(uri + len, "/callback") != 0)
			return enr_error_set(ENR_E_CONFIG,
			                     "%s: [%s] redirect_uri is on the relay but not its "
			                     "/callback: set it to %.*s/callback",
			                     vendor->name, vendor->config_section, (int)len, relay);
		*note = enr_util_printf("the relay's %s", uri);
		return 0;
	}
	/* Enphase's own page shows the customer a code to type in (the sandbox
	 * serves one at its own address). */
	if (code_page) {
		*note = enr_util_printf("%s (the customer types the code it shows)", uri);
		return 0;
	}
	if (strncmp(uri, "http://", 7) == 0) {
		const char *path = strchr(uri + 7, '/');
		if (!path || strcmp(path, "/callback") != 0)
			return enr_error_set(
			    ENR_E_CONFIG,
			    "%s: [%s] redirect_uri is a loopback address whose path "
			    "is not /callback (the only one derenroll listens on)",
			    vendor->name, vendor->config_section);
		*note = enr_util_printf("loopback %s: customers sign in on this computer", uri);
		return 0;
	}
	return enr_error_set(ENR_E_CONFIG,
	                     "%s: [%s] redirect_uri is neither the relay's /callback nor a "
	                     "loopback one: set it to the relay's%s%.*s/callback",
	                     vendor->name, vendor->config_section, len ? " " : " ([relay] url)",
	                     (int)len, len ? relay : "");
}

/* The company portal account (method "account"): its key sees sites. */
static int company_account(char **note, const struct enr_vendor *vendor,
                           const struct enr_catalog *catalog, const struct enr_config *cfg)
{
	enum enr_check_key_kind kind = ENR_CHECK_KEY_WORKS;
	struct enr_credentials cred = {0};
	size_t sites = 0;
	char *key = NULL;
	bool has_key = enr_vendor_setting(vendor, cfg, "key_id") ||
	               enr_vendor_secret(&key, vendor, cfg, "api_key") == 0;
	int rc;

	(void)catalog;
	enr_config_free_secret(key);
	enr_error_clear();
	if (!has_key) {
		*note = enr_util_printf("no company account ([%s] api_key or key_id): customers' "
		                        "own keys are checked as they enroll",
		                        vendor->config_section);
		return ENR_DOCTOR_SKIP;
	}
	/* A refused key and a retired API (SolarEdge's v1 answers 410) come with
	 * vendors.json's one-line guidance as the message. */
	rc = enr_check_key_kind(&kind, &sites, vendor, cfg, "account", &cred);
	if (rc == 0 && kind == ENR_CHECK_KEY_REJECTED)
		rc = ENR_E_REJECTED;
	else if (rc == 0 && kind == ENR_CHECK_KEY_RETIRED)
		rc = ENR_E_MISCONFIGURED;
	if (rc == 0)
		*note = enr_util_printf("the company account sees %zu site%s", sites,
		                        sites == 1 ? "" : "s");
	else
		rc = naming(rc, vendor->config_section, "api_url");
	return rc;
}

/* The relay answers a poll for a state it never saw with 404 once it
 * accepted the secret (401 otherwise): reachable and trusted. */
static int relay(char **note, const struct enr_vendor *vendor, const struct enr_catalog *catalog,
                 const struct enr_config *cfg)
{
	struct enr_http_request *req = NULL;
	struct enr_http_response *resp = NULL;
	char *state = enr_util_random_token(STATE_BYTES), *query = NULL;
	int rc;

	(void)vendor;
	(void)catalog;
	if (!state)
		return enr_error_set(ENR_E_NOMEM, NULL);
	rc = enr_relay_result_request(&req, cfg, state, 0);
	if (rc == 0)
		rc = enr_http_perform(&resp, cfg, req);
	if (rc == 0)
		rc = enr_relay_result_response(&query, resp);
	if (rc == 0 || rc == ENR_E_AGAIN)
		rc = enr_error_set(ENR_E_BADRESPONSE,
		                   "the relay at [relay] url answered for a state it cannot know");
	if (rc == ENR_E_EXPIRED) {
		rc = 0;
		*note = enr_util_printf("%s is reachable and accepts the secret",
		                        enr_config_get(cfg, "relay", "url"));
	} else {
		rc = naming(rc, "relay", "url");
	}
	free(query);
	free(state);
	enr_http_response_free(resp);
	enr_http_request_free(req);
	return rc;
}

/* Whether the company serves Tesla customers in `region` ([vendor.tesla] regions, default na). */
static bool tesla_serves(const struct enr_vendor *vendor, const struct enr_config *cfg,
                         enum enr_tesla_region region)
{
	const char *list = enr_vendor_setting(vendor, cfg, "regions");
	const char *name = enr_tesla_region_name(region);
	size_t len = strlen(name);

	if (!list)
		return region == ENR_TESLA_NA;
	for (const char *p = list; (p = strstr(p, name)); p += len)
		if ((p == list || p[-1] == ' ' || p[-1] == ',') &&
		    (p[len] == '\0' || p[len] == ' ' || p[len] == ','))
			return true;
	return false;
}

/* The app's partner token in a region, and its registration there (for the
 * domain of [vendor.tesla] domain): without it every call answers 412. */
static int tesla_region(char **note, const struct enr_vendor *vendor, const struct enr_config *cfg,
                        enum enr_tesla_region region)
{
	const char *name = enr_tesla_region_name(region);
	const char *domain = enr_vendor_setting(vendor, cfg, "domain");
	char *token = NULL;
	bool registered = false;
	int rc;

	if (!tesla_serves(vendor, cfg, region)) {
		*note = enr_util_printf("region %s not served (add it to [%s] regions to check it)",
		                        name, vendor->config_section);
		return ENR_DOCTOR_SKIP;
	}
	rc = enr_tesla_partner_token(&token, vendor, cfg, region);
	if (rc < 0)
		return naming(rc, vendor->config_section, "client_id and client_secret");
	if (!domain) {
		*note =
		    enr_util_printf("Tesla gave the app a partner token for region %s; set [%s] "
		                    "domain to check its registration",
		                    name, vendor->config_section);
		goto out;
	}
	rc = enr_tesla_registered(&registered, vendor, cfg, region, token, domain);
	if (rc == 0 && !registered)
		rc = enr_error_set(
		    ENR_E_MISCONFIGURED,
		    "the app is not registered in region %s, so every call there "
		    "answers 412: run derenroll tesla register --domain %s --region %s",
		    name, domain, name);
	if (rc == 0)
		*note =
		    enr_util_printf("partner token, and %s registered in region %s", domain, name);
out:
	enr_config_free_secret(token);
	return rc;
}

static int tesla_na(char **note, const struct enr_vendor *vendor, const struct enr_catalog *catalog,
                    const struct enr_config *cfg)
{
	(void)catalog;
	return tesla_region(note, vendor, cfg, ENR_TESLA_NA);
}

static int tesla_eu(char **note, const struct enr_vendor *vendor, const struct enr_catalog *catalog,
                    const struct enr_config *cfg)
{
	(void)catalog;
	return tesla_region(note, vendor, cfg, ENR_TESLA_EU);
}

static int tesla_cn(char **note, const struct enr_vendor *vendor, const struct enr_catalog *catalog,
                    const struct enr_config *cfg)
{
	(void)catalog;
	return tesla_region(note, vendor, cfg, ENR_TESLA_CN);
}

/* The app's public key where Tesla fetches it (https://DOMAIN/.well-known/...). */
static int tesla_public_key(char **note, const struct enr_vendor *vendor,
                            const struct enr_catalog *catalog, const struct enr_config *cfg)
{
	const char *domain = enr_vendor_setting(vendor, cfg, "domain");
	char *url = NULL;
	int rc;

	(void)catalog;
	if (!domain) {
		*note = enr_util_printf("no [%s] domain: the app's domain is not known",
		                        vendor->config_section);
		return ENR_DOCTOR_SKIP;
	}
	rc = enr_tesla_public_key_check(vendor, cfg, domain);
	if (rc == 0 && (rc = enr_tesla_public_key_url(&url, vendor, cfg, domain)) == 0)
		*note = enr_util_printf("served at %s", url);
	free(url);
	return rc;
}

/*
 * What is checked, in order. A row names a vendor id, or (vendor NULL) the
 * method a vendor must offer for the row to apply to it.
 */
static const struct {
	const char *vendor;
	const char *method;
	const char *name;
	enr_doctor_fn run;
} checks[] = {
    {"tesla", NULL, "app credentials", app_configured},
    {"tesla", NULL, "partner registration NA", tesla_na},
    {"tesla", NULL, "partner registration EU", tesla_eu},
    {"tesla", NULL, "partner registration CN", tesla_cn},
    {"tesla", NULL, "public key", tesla_public_key},
    {"enphase", NULL, "app credentials", app_configured},
    {"sma", NULL, "client credentials", client_credentials},
    {"derapi", NULL, "client credentials", derapi_token},
    {NULL, "oauth", "redirect URI", redirect_uri},
    {NULL, "account", "company account", company_account},
};

/* ---- the report -------------------------------------------------------- */

static int add(struct enr_doctor_report *r, const char *vendor, const char *check,
               enum enr_doctor_outcome outcome, char *message)
{
	if (!message)
		return enr_error_set(ENR_E_NOMEM, NULL);
	if (r->n == r->cap) {
		size_t cap = r->cap ? r->cap * 2 : 16;
		struct enr_doctor_result *bigger = realloc(r->results, cap * sizeof(*bigger));
		if (!bigger) {
			free(message);
			return enr_error_set(ENR_E_NOMEM, NULL);
		}
		r->results = bigger;
		r->cap = cap;
	}
	/* One line, whatever the check wrote. */
	for (char *p = message; *p; p++)
		if (*p == '\n' || *p == '\r')
			*p = ' ';
	r->results[r->n++] = (struct enr_doctor_result){vendor, check, outcome, message};
	return 0;
}

static int run_one(struct enr_doctor_report *r, const char *vendor_id, const char *name,
                   enr_doctor_fn fn, const struct enr_vendor *vendor,
                   const struct enr_catalog *catalog, const struct enr_config *cfg)
{
	char *note = NULL;
	int rc;

	enr_error_clear();
	rc = fn(&note, vendor, catalog, cfg);
	if (rc == ENR_E_NOMEM) {
		free(note);
		return rc;
	}
	if (rc < 0) {
		free(note);
		return add(r, vendor_id, name, ENR_DOCTOR_FAILED,
		           enr_util_strdup(enr_error_last()[0] ? enr_error_last()
		                                               : enr_error_default_message(rc)));
	}
	return add(r, vendor_id, name, rc == ENR_DOCTOR_SKIP ? ENR_DOCTOR_SKIPPED : ENR_DOCTOR_OK,
	           note ? note : enr_util_strdup("ok"));
}

/* Whether the config has any setting in `section`. */
static bool configured(const struct enr_config *cfg, const char *section)
{
	const char *s, *k, *v;

	for (size_t i = 0; enr_config_entry(cfg, i, &s, &k, &v) == 0; i++)
		if (strcmp(s, section) == 0 && v && v[0])
			return true;
	return false;
}

static bool applies(const struct enr_vendor *v, const char *vendor, const char *method)
{
	if (vendor)
		return strcmp(vendor, v->id) == 0;
	for (size_t i = 0; i < v->n_methods; i++)
		if (strcmp(v->methods[i].id, method) == 0)
			return true;
	return false;
}

int enr_doctor_run(struct enr_doctor_report **out, const struct enr_catalog *catalog,
                   const struct enr_config *cfg)
{
	struct enr_doctor_report *r = calloc(1, sizeof(*r));
	int rc = 0;

	*out = NULL;
	if (!r)
		return enr_error_set(ENR_E_NOMEM, NULL);
	for (size_t i = 0; rc == 0 && i < enr_catalog_count(catalog); i++) {
		const struct enr_vendor *v = enr_catalog_at(catalog, i);
		if (!configured(cfg, v->config_section)) {
			rc = add(r, v->id, "configured", ENR_DOCTOR_SKIPPED,
			         enr_util_printf("not configured (no [%s] settings)",
			                         v->config_section));
			continue;
		}
		for (size_t k = 0; rc == 0 && k < ENR_ARRAY_SIZE(checks); k++)
			if (applies(v, checks[k].vendor, checks[k].method))
				rc = run_one(r, v->id, checks[k].name, checks[k].run, v, catalog,
				             cfg);
	}
	if (rc == 0 && !enr_relay_client_configured(cfg))
		rc = add(r, "relay", "configured", ENR_DOCTOR_SKIPPED,
		         enr_util_strdup("not configured (no [relay] url): customers' phones "
		                         "cannot send their answer back"));
	else if (rc == 0)
		rc = run_one(r, "relay", "relay", relay, NULL, catalog, cfg);
	enr_error_clear();
	if (rc < 0) {
		enr_doctor_report_free(r);
		return enr_error_set(rc, NULL);
	}
	*out = r;
	return 0;
}

size_t enr_doctor_count(const struct enr_doctor_report *report)
{
	return report->n;
}

const struct enr_doctor_result *enr_doctor_at(const struct enr_doctor_report *report, size_t i)
{
	return i < report->n ? &report->results[i] : NULL;
}

bool enr_doctor_passed(const struct enr_doctor_report *report)
{
	for (size_t i = 0; i < report->n; i++)
		if (report->results[i].outcome == ENR_DOCTOR_FAILED)
			return false;
	return true;
}

void enr_doctor_report_free(struct enr_doctor_report *report)
{
	if (!report)
		return;
	for (size_t i = 0; i < report->n; i++)
		free(report->results[i].message);
	free(report->results);
	free(report);
}
