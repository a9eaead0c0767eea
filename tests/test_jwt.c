/* Unit tests of the jwt module: id_token verification against a JWKS (RS256,
 * ES256), each refusal naming its check, and a cross-check with tokens signed
 * by the openssl command line (not our signer). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>
#include <openssl/bn.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "derenroll/error.h"
#include "helpers.h"
#include "jwt.h"
#include "util.h"

#define NOW 1700000000LL

static EVP_PKEY *rsa, *ec, *rsa2;
static char *jwks; /* rsa "r1", ec "e1" */

static const struct enr_jwt_expect EX = {"https://iss.example", "client-1", NOW, 60, "n-1"};

static struct json_object *claims_base(void)
{
	struct json_object *c = json_object_new_object();
	json_object_object_add(c, "iss", json_object_new_string("https://iss.example"));
	json_object_object_add(c, "aud", json_object_new_string("client-1"));
	json_object_object_add(c, "sub", json_object_new_string("user"));
	json_object_object_add(c, "exp", json_object_new_int64(NOW + 300));
	json_object_object_add(c, "iat", json_object_new_int64(NOW - 10));
	json_object_object_add(c, "nonce", json_object_new_string("n-1"));
	return c;
}

static char *sign(struct json_object *c, EVP_PKEY *k, const char *alg, const char *kid)
{
	char *t = NULL;
	assert_int_equal(enr_jwt_sign(&t, c, k, alg, kid), 0);
	json_object_put(c);
	return t;
}

static void expect_fail(const char *t, const char *keys, const char *msg)
{
	struct json_object *cl = (struct json_object *)1;
	assert_int_equal(enr_jwt_verify(&cl, t, keys, &EX), ENR_E_STATE);
	assert_null(cl);
	assert_non_null(strstr(enr_error_last(), msg));
}

static void expect_ok(const char *t, const char *keys)
{
	struct json_object *cl = NULL;
	assert_int_equal(enr_jwt_verify(&cl, t, keys, &EX), 0);
	assert_string_equal(json_object_get_string(json_object_object_get(cl, "sub")), "user");
	json_object_put(cl);
}

static int setup(void **state)
{
	(void)state;
	struct json_object *set = json_object_new_object(), *keys = json_object_new_array(), *k;
	if (enr_jwt_key_new(&rsa, "RS256") || enr_jwt_key_new(&ec, "ES256") ||
	    enr_jwt_key_new(&rsa2, "RS256"))
		return -1;
	enr_jwt_public_jwk(&k, rsa, "RS256", "r1");
	json_object_array_add(keys, k);
	enr_jwt_public_jwk(&k, ec, "ES256", "e1");
	json_object_array_add(keys, k);
	json_object_object_add(set, "keys", keys);
	jwks = strdup(json_object_to_json_string(set));
	json_object_put(set);
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	EVP_PKEY_free(rsa);
	EVP_PKEY_free(ec);
	EVP_PKEY_free(rsa2);
	free(jwks);
	return 0;
}

static void test_roundtrip(void **state)
{
	(void)state;
	char *t = sign(claims_base(), rsa, "RS256", "r1");
	expect_ok(t, jwks);
	free(t);
	t = sign(claims_base(), ec, "ES256", "e1");
	expect_ok(t, jwks);
	free(t);
	/* no kid: every fitting key is tried */
	t = sign(claims_base(), ec, "ES256", NULL);
	expect_ok(t, jwks);
	free(t);
}

static void test_wrong_key(void **state)
{
	(void)state;
	char *t = sign(claims_base(), rsa2, "RS256", "r1");
	expect_fail(t, jwks, "signature matches no key");
	free(t);
	t = sign(claims_base(), rsa, "RS256", "zz");
	expect_fail(t, jwks, "kid that matches no key");
	free(t);
	/* an ES256 token presented under the RSA key's kid */
	t = sign(claims_base(), ec, "ES256", "r1");
	expect_fail(t, jwks, "signature matches no key");
	free(t);
}

static void test_tampered(void **state)
{
	(void)state;
	char *t = sign(claims_base(), rsa, "RS256", "r1");
	struct json_object *c = claims_base();
	json_object_object_add(c, "sub", json_object_new_string("admin"));
	const char *ps = json_object_to_json_string_ext(c, JSON_C_TO_STRING_PLAIN);
	char *p64 = enr_util_base64_encode(ps, strlen(ps), true);
	size_t head = strcspn(t, "."), sig = head + 1 + strcspn(t + head + 1, ".");
	char *forged = enr_util_printf("%.*s.%s%s", (int)head, t, p64, t + sig);
	expect_fail(forged, jwks, "signature matches no key");
	free(forged);
	free(p64);
	free(t);
	json_object_put(c);
}

static char *raw_token(const char *hdr, struct json_object *c, const void *sig, size_t sig_len)
{
	const char *ps = json_object_to_json_string_ext(c, JSON_C_TO_STRING_PLAIN);
	char *h64 = enr_util_base64_encode(hdr, strlen(hdr), true);
	char *p64 = enr_util_base64_encode(ps, strlen(ps), true);
	char *s64 = enr_util_base64_encode(sig, sig_len, true);
	char *t = enr_util_printf("%s.%s.%s", h64, p64, s64);
	free(h64);
	free(p64);
	free(s64);
	return t;
}

static void test_alg_none_hs256(void **state)
{
	(void)state;
	struct json_object *c = claims_base();
	char *t = raw_token("{\"alg\":\"none\",\"kid\":\"r1\"}", c, "x", 1);
	expect_fail(t, jwks, "unsupported alg");
	free(t);
	/* HS256 with the RSA key's n (from the JWKS) as the HMAC secret */
	BIGNUM *n = NULL;
	assert_true(EVP_PKEY_get_bn_param(rsa, "n", &n) > 0);
	unsigned char nb[256], mac[32];
	unsigned int mac_len = 0;
	BN_bn2bin(n, nb);
	BN_free(n);
	char *unsig = raw_token("{\"alg\":\"HS256\",\"kid\":\"r1\"}", c, "x", 1);
	*strrchr(unsig, '.') = 0;
	HMAC(EVP_sha256(), nb, 256, (unsigned char *)unsig, strlen(unsig), mac, &mac_len);
	char *m64 = enr_util_base64_encode(mac, mac_len, true);
	t = enr_util_printf("%s.%s", unsig, m64);
	expect_fail(t, jwks, "unsupported alg");
	free(t);
	free(m64);
	free(unsig);
	json_object_put(c);
}

static void test_claims(void **state)
{
	(void)state;
	struct json_object *c;
	char *t;
#define CASE(edit, msg)                                                                            \
	c = claims_base();                                                                         \
	edit;                                                                                      \
	t = sign(c, rsa, "RS256", "r1");                                                           \
	expect_fail(t, jwks, msg);                                                                 \
	free(t)
	CASE(json_object_object_add(c, "iss", json_object_new_string("https://evil")), "(iss)");
	CASE(json_object_object_add(c, "aud", json_object_new_string("client-2")), "(aud)");
	struct json_object *a;
	CASE((a = json_object_new_array(), json_object_array_add(a, json_object_new_string("x")),
	      json_object_array_add(a, json_object_new_string("y")),
	      json_object_object_add(c, "aud", a)),
	     "(aud)");
	CASE((a = json_object_new_array(),
	      json_object_array_add(a, json_object_new_string("client-1")),
	      json_object_array_add(a, json_object_new_string("y")),
	      json_object_object_add(c, "aud", a)),
	     "(azp)");
	CASE(json_object_object_add(c, "exp", json_object_new_int64(NOW - 61)), "is expired");
	CASE(json_object_object_del(c, "exp"), "has no exp");
	CASE(json_object_object_add(c, "nbf", json_object_new_int64(NOW + 61)), "(nbf)");
	CASE(json_object_object_add(c, "nonce", json_object_new_string("n-2")), "nonce");
	/* within skew */
	c = claims_base();
	json_object_object_add(c, "exp", json_object_new_int64(NOW - 59));
	t = sign(c, rsa, "RS256", "r1");
	expect_ok(t, jwks);
	free(t);
	c = claims_base();
	a = json_object_new_array();
	json_object_array_add(a, json_object_new_string("client-1"));
	json_object_array_add(a, json_object_new_string("y"));
	json_object_object_add(c, "aud", a);
	json_object_object_add(c, "azp", json_object_new_string("client-1"));
	t = sign(c, ec, "ES256", "e1");
	expect_ok(t, jwks);
	free(t);
}

static void test_malformed(void **state)
{
	(void)state;
	char *t = sign(claims_base(), rsa, "RS256", "r1");
	expect_fail("", jwks, "is empty");
	expect_fail("abc.def", jwks, "compact JWS");
	char *four = enr_util_printf("%s.x", t);
	expect_fail(four, jwks, "compact JWS");
	free(four);
	expect_fail("!!!.e30.AA", jwks, "header is not");
	expect_fail("bm90IGpzb24.e30.AA", jwks, "header is not"); /* "not json" */
	expect_fail("WzFd.e30.AA", jwks, "header is not");        /* [1] */
	expect_fail("e30.e30.", jwks, "signature is not");
	expect_fail(t, "not json", "JWKS is not");
	expect_fail(t, "{\"k\":[]}", "JWKS is not");
	expect_fail(t, "[1]", "JWKS is not");
	expect_fail(t, "{\"keys\":[]}", "kid that matches no key");
	char *big = malloc(20000);
	memset(big, 'A', 19999);
	big[19999] = 0;
	expect_fail(big, jwks, "too long");
	free(big);
	free(t);
}

/* Cross-check: a token signed by the openssl command line. */
static void test_openssl_cli(void **state)
{
	(void)state;
	char dir[] = "/tmp/jwtXXXXXX";
	assert_non_null(mkdtemp(dir));
	char *cmd = enr_util_printf(
	    "cd %s && openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 "
	    "-out k.pem 2>/dev/null && openssl pkey -in k.pem -pubout -text -noout "
	    "> pub.txt",
	    dir);
	assert_int_equal(system(cmd), 0);
	free(cmd);
	/* public key point from the text dump: "pub:" then hex lines */
	char *path = enr_util_printf("%s/pub.txt", dir);
	FILE *f = fopen(path, "r");
	free(path);
	assert_non_null(f);
	char line[256], hex[1024] = "";
	size_t nhex = 0;
	int in = 0;
	while (fgets(line, sizeof(line), f)) {
		if (!strncmp(line, "pub:", 4)) {
			in = 1;
			continue;
		}
		if (in && line[0] == ' ') {
			for (char *p = line; *p && nhex + 1 < sizeof(hex); p++)
				if (strchr("0123456789abcdef", *p))
					hex[nhex++] = *p;
			hex[nhex] = '\0';
		} else if (in)
			in = 0;
	}
	fclose(f);
	assert_int_equal(strlen(hex), 130);
	unsigned char pt[65];
	for (int i = 0; i < 65; i++)
		sscanf(hex + 2 * i, "%2hhx", &pt[i]);
	char *x = enr_util_base64_encode(pt + 1, 32, true),
	     *y = enr_util_base64_encode(pt + 33, 32, true);
	char *set = enr_util_printf(
	    "{\"keys\":[{\"kty\":\"EC\",\"crv\":\"P-256\",\"kid\":\"c\",\"x\":\"%s\","
	    "\"y\":\"%s\"}]}",
	    x, y);
	free(x);
	free(y);
	struct json_object *c = claims_base();
	const char *ps = json_object_to_json_string_ext(c, JSON_C_TO_STRING_PLAIN);
	const char *hs = "{\"alg\":\"ES256\",\"kid\":\"c\"}";
	char *h64 = enr_util_base64_encode(hs, strlen(hs), true),
	     *p64 = enr_util_base64_encode(ps, strlen(ps), true);
	char *input = enr_util_printf("%s.%s", h64, p64);
	free(h64);
	free(p64);
	json_object_put(c);
	path = enr_util_printf("%s/in", dir);
	f = fopen(path, "w");
	fputs(input, f);
	fclose(f);
	free(path);
	cmd = enr_util_printf("cd %s && openssl dgst -sha256 -sign k.pem -out sig.der in && "
	                      "openssl asn1parse -inform DER -in sig.der > sig.txt",
	                      dir);
	assert_int_equal(system(cmd), 0);
	free(cmd);
	path = enr_util_printf("%s/sig.txt", dir);
	f = fopen(path, "r");
	free(path);
	unsigned char rs[64];
	int nint = 0;
	while (fgets(line, sizeof(line), f) && nint < 2) {
		char *p = strstr(line, "INTEGER");
		if (!p || !(p = strchr(p, ':')))
			continue;
		p++;
		size_t hl = strcspn(p, "\r\n");
		p[hl] = 0;
		unsigned char *o = rs + 32 * nint;
		memset(o, 0, 32);
		while (hl > 64) {
			p++;
			hl--;
		}
		size_t bytes = hl / 2;
		for (size_t i = 0; i < bytes; i++)
			sscanf(p + 2 * i, "%2hhx", &o[32 - bytes + i]);
		nint++;
	}
	fclose(f);
	assert_int_equal(nint, 2);
	char *s64 = enr_util_base64_encode(rs, 64, true);
	char *tok = enr_util_printf("%s.%s", input, s64);
	expect_ok(tok, set);
	tok[strlen(tok) - 3] ^= 1;
	expect_fail(tok, set, "");
	free(tok);
	free(s64);
	free(input);
	free(set);
	cmd = enr_util_printf("rm -rf %s", dir);
	assert_int_equal(system(cmd), 0);
	free(cmd);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_roundtrip),   cmocka_unit_test(test_wrong_key),
	    cmocka_unit_test(test_tampered),    cmocka_unit_test(test_alg_none_hs256),
	    cmocka_unit_test(test_claims),      cmocka_unit_test(test_malformed),
	    cmocka_unit_test(test_openssl_cli),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
