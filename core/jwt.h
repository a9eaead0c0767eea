/* OpenID Connect id_token (JWS compact) verification against a JWKS, and the
 * signing side the sandbox uses. RS256 and ES256 only. Internal header. */
#ifndef ENR_JWT_H
#define ENR_JWT_H

#include <json-c/json.h>
#include <openssl/evp.h>

struct enr_jwt_expect {
	const char *issuer;   /* required `iss`, exact compare */
	const char *audience; /* our client_id */
	long long now;        /* seconds since the epoch */
	long skew;            /* leeway for exp / nbf / iat */
	const char *nonce;    /* when non-NULL, `nonce` must equal it */
};

/* Splits a compact JWS and decodes header and payload (both must be JSON
 * objects); *signed_len is the length of "header.payload". ENR_E_STATE. */
int enr_jwt_decode(struct json_object **header, struct json_object **payload, unsigned char **sig,
                   size_t *sig_len, size_t *signed_len, const char *jwt);

int enr_jwt_verify(struct json_object **claims, const char *jwt, const char *jwks,
                   const struct enr_jwt_expect *expect);

/* enr_jwt_verify()'s checks of the header's alg (not "none") and of the
 * claims, without the signature: for an id_token straight from the token
 * endpoint of a vendor that publishes no JWKS (OIDC Core 3.1.3.7 (6), TLS
 * stands in for the signature). */
int enr_jwt_check(struct json_object **claims, const char *jwt,
                  const struct enr_jwt_expect *expect);

int enr_jwt_key_new(EVP_PKEY **out, const char *alg);
int enr_jwt_public_jwk(struct json_object **out, EVP_PKEY *key, const char *alg, const char *kid);
int enr_jwt_sign(char **out, struct json_object *claims, EVP_PKEY *key, const char *alg,
                 const char *kid);

#endif
