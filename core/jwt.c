/* id_token verification (RS256, ES256) with OpenSSL 3 EVP, and signing. */
#include "jwt.h"

#include <stdlib.h>
#include <string.h>

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ecdsa.h>
#include <openssl/param_build.h>
#include <openssl/rsa.h>

#include "derenroll/error.h"
#include "util.h"

#define JWT_MAX  16384
#define JWKS_MAX 65536

static int bad(const char *what)
{
	return enr_error_set(ENR_E_STATE, "the id_token %s", what);
}

static int decode_json(struct json_object **out, const char *s, size_t n)
{
	char *part = strndup(s, n);
	unsigned char *raw = NULL;
	size_t len = 0;
	*out = NULL;
	if (!part)
		return enr_error_set(ENR_E_NOMEM, "out of memory");
	if (n == 0 || strpbrk(part, "+/=") || enr_util_base64_decode(&raw, &len, part) < 0) {
		free(part);
		return -1;
	}
	free(part);
	if (strlen((char *)raw) != len) {
		free(raw);
		return -1;
	}
	struct json_tokener *tok = json_tokener_new();
	struct json_object *o = tok ? json_tokener_parse_ex(tok, (char *)raw, (int)len) : NULL;
	if (o && json_tokener_get_parse_end(tok) != len) {
		json_object_put(o);
		o = NULL;
	}
	json_tokener_free(tok);
	free(raw);
	if (!json_object_is_type(o, json_type_object)) {
		json_object_put(o);
		return -1;
	}
	*out = o;
	return 0;
}

int enr_jwt_decode(struct json_object **header, struct json_object **payload, unsigned char **sig,
                   size_t *sig_len, size_t *signed_len, const char *jwt)
{
	*header = *payload = NULL;
	*sig = NULL;
	if (!jwt || !*jwt)
		return bad("is empty");
	size_t n = strnlen(jwt, JWT_MAX + 1);
	if (n > JWT_MAX)
		return bad("is too long");
	const char *d1 = strchr(jwt, '.');
	const char *d2 = d1 ? strchr(d1 + 1, '.') : NULL;
	if (!d2 || strchr(d2 + 1, '.'))
		return bad("is not a compact JWS (three dot-separated parts)");
	if (decode_json(header, jwt, (size_t)(d1 - jwt)) < 0)
		return bad("header is not base64url JSON");
	if (decode_json(payload, d1 + 1, (size_t)(d2 - d1 - 1)) < 0) {
		json_object_put(*header);
		*header = NULL;
		return bad("payload is not base64url JSON");
	}
	if (!d2[1] || strpbrk(d2 + 1, "+/=") || enr_util_base64_decode(sig, sig_len, d2 + 1) < 0) {
		json_object_put(*header);
		json_object_put(*payload);
		*header = *payload = NULL;
		*sig = NULL;
		return bad("signature is not base64url");
	}
	*signed_len = (size_t)(d2 - jwt);
	return 0;
}

static const char *str_field(struct json_object *o, const char *k)
{
	struct json_object *v;
	if (!json_object_object_get_ex(o, k, &v) || !json_object_is_type(v, json_type_string))
		return NULL;
	return json_object_get_string(v);
}

static BIGNUM *b64_bn(struct json_object *o, const char *k, size_t want)
{
	const char *s = str_field(o, k);
	unsigned char *raw = NULL;
	size_t len = 0;
	if (!s || enr_util_base64_decode(&raw, &len, s) < 0)
		return NULL;
	BIGNUM *bn = NULL;
	if (len > 0 && len <= 1024 && (!want || len == want))
		bn = BN_bin2bn(raw, (int)len, NULL);
	free(raw);
	return bn;
}

static EVP_PKEY *jwk_key(struct json_object *jwk, int rsa)
{
	EVP_PKEY *pkey = NULL;
	OSSL_PARAM_BLD *bld = OSSL_PARAM_BLD_new();
	OSSL_PARAM *params = NULL;
	BIGNUM *a = NULL, *b = NULL;
	unsigned char pub[65];
	if (!bld)
		return NULL;
	if (rsa) {
		a = b64_bn(jwk, "n", 0);
		b = b64_bn(jwk, "e", 0);
		/* RFC 7518 3.3: RS256 keys are 2048 bits or more. */
		if (!a || !b || BN_num_bits(a) < 2048 ||
		    !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, a) ||
		    !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, b))
			goto out;
	} else {
		const char *crv = str_field(jwk, "crv");
		a = b64_bn(jwk, "x", 32);
		b = b64_bn(jwk, "y", 32);
		if (!crv || strcmp(crv, "P-256") || !a || !b)
			goto out;
		pub[0] = 4;
		BN_bn2binpad(a, pub + 1, 32);
		BN_bn2binpad(b, pub + 33, 32);
		if (!OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME, "prime256v1",
		                                     0) ||
		    !OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY, pub,
		                                      sizeof(pub)))
			goto out;
	}
	params = OSSL_PARAM_BLD_to_param(bld);
	EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_name(NULL, rsa ? "RSA" : "EC", NULL);
	if (params && ctx && EVP_PKEY_fromdata_init(ctx) > 0)
		if (EVP_PKEY_fromdata(ctx, &pkey, EVP_PKEY_PUBLIC_KEY, params) <= 0)
			pkey = NULL;
	EVP_PKEY_CTX_free(ctx);
out:
	OSSL_PARAM_free(params);
	OSSL_PARAM_BLD_free(bld);
	BN_free(a);
	BN_free(b);
	return pkey;
}

/* Raw R||S (64 bytes) to DER; malloc'd. */
static int rs_to_der(unsigned char **der, size_t *der_len, const unsigned char *rs, size_t n)
{
	if (n != 64)
		return -1;
	ECDSA_SIG *s = ECDSA_SIG_new();
	BIGNUM *r = BN_bin2bn(rs, 32, NULL), *ss = BN_bin2bn(rs + 32, 32, NULL);
	if (!s || !r || !ss || !ECDSA_SIG_set0(s, r, ss)) {
		BN_free(r);
		BN_free(ss);
		ECDSA_SIG_free(s);
		return -1;
	}
	*der = NULL;
	int len = i2d_ECDSA_SIG(s, der);
	ECDSA_SIG_free(s);
	if (len <= 0)
		return -1;
	*der_len = (size_t)len;
	return 0;
}

static int verify_with(EVP_PKEY *key, const unsigned char *sig, size_t sig_len, const char *data,
                       size_t len)
{
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	int ok = md && EVP_DigestVerifyInit_ex(md, NULL, "SHA256", NULL, NULL, key, NULL) > 0 &&
	         EVP_DigestVerify(md, sig, sig_len, (const unsigned char *)data, len) == 1;
	EVP_MD_CTX_free(md);
	return ok;
}

static int check_claims(struct json_object *c, const struct enr_jwt_expect *ex)
{
	const char *iss = str_field(c, "iss");
	if (!ex->issuer || !iss || strcmp(iss, ex->issuer))
		return bad("is from another issuer (iss)");
	struct json_object *aud;
	int found = 0;
	size_t naud = 0;
	if (!ex->audience || !json_object_object_get_ex(c, "aud", &aud))
		return bad("is for another client (aud)");
	if (json_object_is_type(aud, json_type_string)) {
		found = !strcmp(json_object_get_string(aud), ex->audience);
		naud = 1;
	} else if (json_object_is_type(aud, json_type_array)) {
		naud = json_object_array_length(aud);
		for (size_t i = 0; i < naud; i++) {
			struct json_object *a = json_object_array_get_idx(aud, i);
			if (json_object_is_type(a, json_type_string) &&
			    !strcmp(json_object_get_string(a), ex->audience))
				found = 1;
		}
	}
	if (!found)
		return bad("is for another client (aud)");
	if (naud > 1) {
		const char *azp = str_field(c, "azp");
		if (!azp || strcmp(azp, ex->audience))
			return bad("is for another client (azp)");
	}
	struct json_object *v;
	if (!json_object_object_get_ex(c, "exp", &v) || !json_object_is_type(v, json_type_int))
		return bad("has no exp");
	if (json_object_get_int64(v) + ex->skew < ex->now)
		return bad("is expired");
	if (json_object_object_get_ex(c, "nbf", &v)) {
		if (!json_object_is_type(v, json_type_int))
			return bad("has a malformed nbf");
		if (json_object_get_int64(v) > ex->now + ex->skew)
			return bad("is not valid yet (nbf)");
	}
	if (json_object_object_get_ex(c, "iat", &v)) {
		if (!json_object_is_type(v, json_type_int))
			return bad("has a malformed iat");
		if (json_object_get_int64(v) > ex->now + ex->skew)
			return bad("was issued in the future (iat)");
	}
	if (ex->nonce) {
		const char *nonce = str_field(c, "nonce");
		if (!nonce || strcmp(nonce, ex->nonce))
			return bad("has another nonce");
	}
	return 0;
}

int enr_jwt_verify(struct json_object **claims, const char *jwt, const char *jwks,
                   const struct enr_jwt_expect *expect)
{
	struct json_object *hdr = NULL, *pl = NULL, *set = NULL, *keys;
	unsigned char *sig = NULL, *der = NULL;
	size_t sig_len = 0, signed_len = 0, der_len = 0;
	int rc;
	*claims = NULL;
	if ((rc = enr_jwt_decode(&hdr, &pl, &sig, &sig_len, &signed_len, jwt)) < 0)
		return rc;
	const char *alg = str_field(hdr, "alg");
	const char *kid = str_field(hdr, "kid");
	int rsa;
	if (alg && !strcmp(alg, "RS256"))
		rsa = 1;
	else if (alg && !strcmp(alg, "ES256"))
		rsa = 0;
	else {
		rc = bad("uses an unsupported alg (only RS256 and ES256)");
		goto out;
	}
	if (!rsa && rs_to_der(&der, &der_len, sig, sig_len) < 0) {
		rc = bad("signature is not a 64-byte ES256 signature");
		goto out;
	}
	if (!jwks || strnlen(jwks, JWKS_MAX + 1) > JWKS_MAX || !(set = json_tokener_parse(jwks)) ||
	    !json_object_is_type(set, json_type_object) ||
	    !json_object_object_get_ex(set, "keys", &keys) ||
	    !json_object_is_type(keys, json_type_array)) {
		rc = enr_error_set(ENR_E_STATE, "the JWKS is not a JSON object with a keys array");
		goto out;
	}
	int kid_seen = 0, verified = 0;
	for (size_t i = 0; i < json_object_array_length(keys) && !verified; i++) {
		struct json_object *jwk = json_object_array_get_idx(keys, i);
		if (!json_object_is_type(jwk, json_type_object))
			continue;
		const char *kkid = str_field(jwk, "kid");
		if (kid && (!kkid || strcmp(kid, kkid)))
			continue;
		kid_seen = 1;
		const char *kty = str_field(jwk, "kty"), *kalg = str_field(jwk, "alg");
		const char *use = str_field(jwk, "use");
		if (!kty || strcmp(kty, rsa ? "RSA" : "EC") || (kalg && strcmp(kalg, alg)) ||
		    (use && strcmp(use, "sig")) ||
		    (json_object_object_get_ex(jwk, "alg", NULL) && !kalg) ||
		    (json_object_object_get_ex(jwk, "use", NULL) && !use))
			continue;
		EVP_PKEY *key = jwk_key(jwk, rsa);
		if (key)
			verified = rsa ? verify_with(key, sig, sig_len, jwt, signed_len)
			               : verify_with(key, der, der_len, jwt, signed_len);
		EVP_PKEY_free(key);
	}
	if (kid && !kid_seen) {
		rc = bad("names a kid that matches no key of the JWKS");
		goto out;
	}
	if (!verified) {
		rc = enr_error_set(ENR_E_STATE,
		                   "the id_token's signature matches no key of the JWKS");
		goto out;
	}
	if ((rc = check_claims(pl, expect)) < 0)
		goto out;
	*claims = pl;
	pl = NULL;
out:
	json_object_put(hdr);
	json_object_put(pl);
	json_object_put(set);
	free(sig);
	OPENSSL_free(der);
	return rc;
}

int enr_jwt_check(struct json_object **claims, const char *jwt, const struct enr_jwt_expect *expect)
{
	struct json_object *hdr = NULL, *pl = NULL;
	unsigned char *sig = NULL;
	size_t sig_len = 0, signed_len = 0;
	const char *alg;
	int rc;

	*claims = NULL;
	if ((rc = enr_jwt_decode(&hdr, &pl, &sig, &sig_len, &signed_len, jwt)) < 0)
		return rc;
	alg = str_field(hdr, "alg");
	if (!alg || !strcmp(alg, "none"))
		rc = bad("is not signed (alg none)");
	else if ((rc = check_claims(pl, expect)) == 0) {
		*claims = pl;
		pl = NULL;
	}
	json_object_put(hdr);
	json_object_put(pl);
	free(sig);
	return rc;
}

int enr_jwt_key_new(EVP_PKEY **out, const char *alg)
{
	*out = NULL;
	if (alg && !strcmp(alg, "RS256"))
		*out = EVP_RSA_gen(2048);
	else if (alg && !strcmp(alg, "ES256"))
		*out = EVP_EC_gen("P-256");
	else
		return enr_error_set(ENR_E_STATE, "unsupported JWS alg");
	return *out ? 0 : enr_error_set(ENR_E_CRYPTO, "key generation failed");
}

static int put_bn(struct json_object *o, const char *k, const BIGNUM *bn, int pad)
{
	int len = pad ? pad : BN_num_bytes(bn);
	unsigned char buf[1024];
	if (len <= 0 || len > (int)sizeof(buf) || BN_bn2binpad(bn, buf, len) < 0)
		return -1;
	char *s = enr_util_base64_encode(buf, (size_t)len, true);
	if (!s)
		return -1;
	json_object_object_add(o, k, json_object_new_string(s));
	free(s);
	return 0;
}

int enr_jwt_public_jwk(struct json_object **out, EVP_PKEY *key, const char *alg, const char *kid)
{
	int rsa = alg && !strcmp(alg, "RS256");
	BIGNUM *a = NULL, *b = NULL;
	int rc = -1;
	*out = NULL;
	if (!rsa && !(alg && !strcmp(alg, "ES256")))
		return enr_error_set(ENR_E_STATE, "unsupported JWS alg");
	struct json_object *o = json_object_new_object();
	json_object_object_add(o, "kty", json_object_new_string(rsa ? "RSA" : "EC"));
	if (kid)
		json_object_object_add(o, "kid", json_object_new_string(kid));
	json_object_object_add(o, "alg", json_object_new_string(alg));
	json_object_object_add(o, "use", json_object_new_string("sig"));
	if (rsa) {
		if (EVP_PKEY_get_bn_param(key, OSSL_PKEY_PARAM_RSA_N, &a) > 0 &&
		    EVP_PKEY_get_bn_param(key, OSSL_PKEY_PARAM_RSA_E, &b) > 0)
			rc = put_bn(o, "n", a, 0) | put_bn(o, "e", b, 0);
	} else {
		json_object_object_add(o, "crv", json_object_new_string("P-256"));
		if (EVP_PKEY_get_bn_param(key, OSSL_PKEY_PARAM_EC_PUB_X, &a) > 0 &&
		    EVP_PKEY_get_bn_param(key, OSSL_PKEY_PARAM_EC_PUB_Y, &b) > 0)
			rc = put_bn(o, "x", a, 32) | put_bn(o, "y", b, 32);
	}
	BN_free(a);
	BN_free(b);
	if (rc) {
		json_object_put(o);
		return enr_error_set(ENR_E_CRYPTO, "cannot export the public key as a JWK");
	}
	*out = o;
	return 0;
}

int enr_jwt_sign(char **out, struct json_object *claims, EVP_PKEY *key, const char *alg,
                 const char *kid)
{
	int rsa = alg && !strcmp(alg, "RS256");
	*out = NULL;
	if (!rsa && !(alg && !strcmp(alg, "ES256")))
		return enr_error_set(ENR_E_STATE, "unsupported JWS alg");
	struct json_object *h = json_object_new_object();
	json_object_object_add(h, "alg", json_object_new_string(alg));
	json_object_object_add(h, "typ", json_object_new_string("JWT"));
	if (kid)
		json_object_object_add(h, "kid", json_object_new_string(kid));
	const char *hs = json_object_to_json_string_ext(h, JSON_C_TO_STRING_PLAIN);
	const char *ps = json_object_to_json_string_ext(claims, JSON_C_TO_STRING_PLAIN);
	char *h64 = enr_util_base64_encode(hs, strlen(hs), true);
	char *p64 = enr_util_base64_encode(ps, strlen(ps), true);
	json_object_put(h);
	char *input = h64 && p64 ? enr_util_printf("%s.%s", h64, p64) : NULL;
	free(h64);
	free(p64);
	unsigned char *sig = NULL, rs[64];
	size_t sig_len = 0;
	int rc = enr_error_set(ENR_E_CRYPTO, "cannot sign the id_token");
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	if (input && md && EVP_DigestSignInit_ex(md, NULL, "SHA256", NULL, NULL, key, NULL) > 0 &&
	    EVP_DigestSign(md, NULL, &sig_len, (unsigned char *)input, strlen(input)) > 0 &&
	    (sig = malloc(sig_len)) &&
	    EVP_DigestSign(md, sig, &sig_len, (unsigned char *)input, strlen(input)) > 0) {
		const unsigned char *p = sig;
		unsigned char *use = sig;
		size_t use_len = sig_len;
		ECDSA_SIG *es = NULL;
		if (!rsa) {
			es = d2i_ECDSA_SIG(NULL, &p, (long)sig_len);
			use = NULL;
			if (es && BN_bn2binpad(ECDSA_SIG_get0_r(es), rs, 32) == 32 &&
			    BN_bn2binpad(ECDSA_SIG_get0_s(es), rs + 32, 32) == 32) {
				use = rs;
				use_len = 64;
			}
			ECDSA_SIG_free(es);
		}
		char *s64 = use ? enr_util_base64_encode(use, use_len, true) : NULL;
		if (s64) {
			*out = enr_util_printf("%s.%s", input, s64);
			free(s64);
			if (*out) {
				enr_error_clear();
				rc = 0;
			}
		}
	}
	EVP_MD_CTX_free(md);
	free(sig);
	free(input);
	return rc;
}
