/*
 * OAuth: the redirect coming back (enr_oauth_callback_parse and
 * enr_oauth_parse_code) and the token endpoint's answer
 * (enr_oauth_token_response, then the account it names, enr_oauth_identity_new).
 * An input's first line says which:
 *   callback VENDOR EXPECTED_STATE   (then the URL, query or code; "-" for no state)
 *   token VENDOR STATUS CONTENT_TYPE (then the body; "-" for no content type)
 *   jwt                              (then a JWT)
 */
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "common.h"
#include "derenroll/config.h"
#include "derenroll/http.h"
#include "derenroll/log.h"
#include "derenroll/oauth.h"

static void callback(const char *vendor_id, const char *state, const uint8_t *data, size_t size)
{
	const struct enr_vendor *vendor = fuzz_vendor(vendor_id);
	const char *expected = strcmp(state, "-") == 0 ? NULL : state;
	struct enr_oauth_callback *cb = NULL;
	char *input = fuzz_string(data, size), *code = NULL;

	if (enr_oauth_callback_parse(&cb, vendor, input, expected) == 0) {
		for (size_t i = 0; i < cb->n_params; i++)
			enr_oauth_callback_param(cb, cb->params[i].name);
		enr_oauth_callback_param(cb, "enrollmentID");
	}
	enr_oauth_callback_free(cb);
	if (enr_oauth_parse_code(&code, vendor, input, expected) == 0)
		enr_config_free_secret(code);
	free(input);
}

static void token(const char *vendor_id, const char *status, const char *type, const uint8_t *data,
                  size_t size)
{
	const struct enr_vendor *vendor = fuzz_vendor(vendor_id);
	struct enr_http_response *resp = fuzz_response(
	    vendor, strtol(status, NULL, 10), strcmp(type, "-") == 0 ? NULL : type, data, size);
	struct enr_oauth_tokens *tokens = NULL;
	struct enr_oauth_identity *identity = NULL;

	if (enr_oauth_token_response(&tokens, resp) == 0 &&
	    enr_oauth_identity_new(&identity, vendor, tokens, NULL) == 0)
		enr_oauth_identity_free(identity);
	enr_oauth_tokens_free(tokens);
	enr_http_response_free(resp);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char words[4][FUZZ_WORD_MAX];

	fuzz_words(words, 4, &data, &size);
	if (strcmp(words[0], "callback") == 0) {
		callback(words[1], words[2], data, size);
	} else if (strcmp(words[0], "token") == 0) {
		token(words[1], words[2], words[3], data, size);
	} else if (strcmp(words[0], "jwt") == 0) {
		char *jwt = fuzz_string(data, size);
		json_object *claims = NULL;
		if (enr_oauth_jwt_claims(&claims, jwt) == 0)
			json_object_put(claims);
		free(jwt);
	}
	enr_log_clear_secrets();
	return 0;
}
