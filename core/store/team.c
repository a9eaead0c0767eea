/*
 * The team store's keys: sealed blobs (AES-256-GCM), the members' X25519 key
 * pairs and the team key wrapped for each member. No database code here.
 *
 * A member's team key copy: ephemeral public key (32) || nonce (12) ||
 * AES-256-GCM(team key) (32) || tag (16), its key derived with HKDF-SHA256
 * from X25519(ephemeral, member) and both public keys. Anyone who knows a
 * member's public key can wrap a new team key for them: removing a member
 * rotates the key without knowing anyone's passphrase.
 */

#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>

#include "derenroll/error.h"
#include "store/internal.h"
#include "util.h"

#define WRAP_INFO "derenroll team key v1"

int enr_store__seal(unsigned char **out, size_t *out_len, const unsigned char key[STORE_KEY_SIZE],
                    const char *aad, const void *plain, size_t len)
{
	struct store_key k = {.have = true};
	unsigned char *buf;
	EVP_CIPHER_CTX *ctx;
	int outl = 0, fin = 0, ok;

	*out = NULL;
	if (len > (size_t)1 << 30)
		return enr_error_set(ENR_E_USAGE, "too much to seal");
	buf = malloc(STORE_NONCE_SIZE + len + STORE_TAG_SIZE);
	if (!buf)
		return enr_error_set(ENR_E_NOMEM, NULL);
	memcpy(k.key, key, STORE_KEY_SIZE);
	if (enr_util_random(buf, STORE_NONCE_SIZE) < 0) {
		OPENSSL_cleanse(&k, sizeof(k));
		free(buf);
		return enr_error_last_code();
	}
	ctx = enr_store__cipher(true, &k, buf, (const unsigned char *)aad, strlen(aad));
	OPENSSL_cleanse(&k, sizeof(k));
	ok = ctx && EVP_CipherUpdate(ctx, buf + STORE_NONCE_SIZE, &outl, plain, (int)len) == 1 &&
	     EVP_CipherFinal_ex(ctx, buf + STORE_NONCE_SIZE + outl, &fin) == 1 &&
	     EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, STORE_TAG_SIZE,
	                         buf + STORE_NONCE_SIZE + len) == 1;
	EVP_CIPHER_CTX_free(ctx);
	if (!ok) {
		free(buf);
		return enr_error_set(ENR_E_CRYPTO, "cannot encrypt (AES-256-GCM)");
	}
	*out = buf;
	*out_len = STORE_NONCE_SIZE + len + STORE_TAG_SIZE;
	return 0;
}

int enr_store__unseal(unsigned char **out, size_t *out_len, const unsigned char key[STORE_KEY_SIZE],
                      const char *aad, const unsigned char *sealed, size_t len)
{
	struct store_key k = {.have = true};
	size_t n = len - STORE_NONCE_SIZE - STORE_TAG_SIZE;
	unsigned char *buf;
	EVP_CIPHER_CTX *ctx;
	int outl = 0, fin = 0, ok;

	*out = NULL;
	if (len < STORE_NONCE_SIZE + STORE_TAG_SIZE)
		return enr_error_set(ENR_E_CORRUPT, "a sealed value is too short");
	/* One byte more: what it holds is often text, given NUL-terminated. */
	if (!(buf = malloc(n + 1)))
		return enr_error_set(ENR_E_NOMEM, NULL);
	memcpy(k.key, key, STORE_KEY_SIZE);
	ctx = enr_store__cipher(false, &k, sealed, (const unsigned char *)aad, strlen(aad));
	OPENSSL_cleanse(&k, sizeof(k));
	ok = ctx && EVP_CipherUpdate(ctx, buf, &outl, sealed + STORE_NONCE_SIZE, (int)n) == 1 &&
	     EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, STORE_TAG_SIZE,
	                         (void *)(sealed + STORE_NONCE_SIZE + n)) == 1 &&
	     EVP_CipherFinal_ex(ctx, buf + outl, &fin) == 1;
	EVP_CIPHER_CTX_free(ctx);
	if (!ok) {
		OPENSSL_clear_free(buf, n + 1);
		return enr_error_set(ENR_E_CORRUPT,
		                     "a sealed value does not decrypt (wrong key, or "
		                     "changed in the database)");
	}
	buf[n] = '\0';
	*out = buf;
	*out_len = n;
	return 0;
}

/* ---- X25519 ---- */

static EVP_PKEY *raw_key(const unsigned char *bytes, bool private)
{
	return private ? EVP_PKEY_new_raw_private_key(EVP_PKEY_X25519, NULL, bytes, 32)
	               : EVP_PKEY_new_raw_public_key(EVP_PKEY_X25519, NULL, bytes, 32);
}

int enr_store__keypair(unsigned char priv[32], unsigned char pub[32])
{
	EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_id(EVP_PKEY_X25519, NULL);
	EVP_PKEY *key = NULL;
	size_t n1 = 32, n2 = 32;
	int ok = ctx && EVP_PKEY_keygen_init(ctx) == 1 && EVP_PKEY_keygen(ctx, &key) == 1 &&
	         EVP_PKEY_get_raw_private_key(key, priv, &n1) == 1 &&
	         EVP_PKEY_get_raw_public_key(key, pub, &n2) == 1 && n1 == 32 && n2 == 32;

	EVP_PKEY_free(key);
	EVP_PKEY_CTX_free(ctx);
	return ok ? 0 : enr_error_set(ENR_E_CRYPTO, "cannot make an X25519 key pair");
}

int enr_store__public_of(unsigned char pub[32], const unsigned char priv[32])
{
	EVP_PKEY *key = raw_key(priv, true);
	size_t n = 32;
	int ok = key && EVP_PKEY_get_raw_public_key(key, pub, &n) == 1 && n == 32;

	EVP_PKEY_free(key);
	return ok ? 0 : enr_error_set(ENR_E_CRYPTO, "not an X25519 private key");
}

/* The key that wraps a team key: HKDF-SHA256 over X25519(priv, peer) and both public keys. */
static int wrap_key(unsigned char out[STORE_KEY_SIZE], const unsigned char priv[32],
                    const unsigned char peer[32], const unsigned char eph_pub[32],
                    const unsigned char member_pub[32])
{
	EVP_PKEY *me = raw_key(priv, true), *them = raw_key(peer, false);
	EVP_PKEY_CTX *dh = me ? EVP_PKEY_CTX_new(me, NULL) : NULL, *kdf = NULL;
	unsigned char shared[32], salt[64];
	size_t n = sizeof(shared), outn = STORE_KEY_SIZE;
	int ok = dh && them && EVP_PKEY_derive_init(dh) == 1 &&
	         EVP_PKEY_derive_set_peer(dh, them) == 1 && EVP_PKEY_derive(dh, shared, &n) == 1 &&
	         n == sizeof(shared);

	memcpy(salt, eph_pub, 32);
	memcpy(salt + 32, member_pub, 32);
	if (ok) {
		kdf = EVP_PKEY_CTX_new_id(EVP_PKEY_HKDF, NULL);
		ok = kdf && EVP_PKEY_derive_init(kdf) == 1 &&
		     EVP_PKEY_CTX_set_hkdf_md(kdf, EVP_sha256()) == 1 &&
		     EVP_PKEY_CTX_set1_hkdf_salt(kdf, salt, sizeof(salt)) == 1 &&
		     EVP_PKEY_CTX_set1_hkdf_key(kdf, shared, sizeof(shared)) == 1 &&
		     EVP_PKEY_CTX_add1_hkdf_info(kdf, (const unsigned char *)WRAP_INFO,
		                                 (int)strlen(WRAP_INFO)) == 1 &&
		     EVP_PKEY_derive(kdf, out, &outn) == 1 && outn == STORE_KEY_SIZE;
	}
	OPENSSL_cleanse(shared, sizeof(shared));
	EVP_PKEY_CTX_free(kdf);
	EVP_PKEY_CTX_free(dh);
	EVP_PKEY_free(me);
	EVP_PKEY_free(them);
	return ok ? 0 : enr_error_set(ENR_E_CRYPTO, "cannot derive a key (X25519, HKDF)");
}

int enr_store__wrap_team_key(unsigned char **out, size_t *out_len,
                             const unsigned char team_key[STORE_KEY_SIZE],
                             const unsigned char member_pub[32], const char *aad)
{
	unsigned char eph[32], eph_pub[32], k[STORE_KEY_SIZE], *sealed = NULL, *buf;
	size_t n = 0;
	int rc;

	*out = NULL;
	if ((rc = enr_store__keypair(eph, eph_pub)) < 0)
		return rc;
	rc = wrap_key(k, eph, member_pub, eph_pub, member_pub);
	OPENSSL_cleanse(eph, sizeof(eph));
	if (rc == 0)
		rc = enr_store__seal(&sealed, &n, k, aad, team_key, STORE_KEY_SIZE);
	OPENSSL_cleanse(k, sizeof(k));
	if (rc < 0)
		return rc;
	if (!(buf = malloc(32 + n))) {
		free(sealed);
		return enr_error_set(ENR_E_NOMEM, NULL);
	}
	memcpy(buf, eph_pub, 32);
	memcpy(buf + 32, sealed, n);
	free(sealed);
	*out = buf;
	*out_len = 32 + n;
	return 0;
}

int enr_store__unwrap_team_key(unsigned char team_key[STORE_KEY_SIZE], const unsigned char priv[32],
                               const unsigned char *wrapped, size_t len, const char *aad)
{
	unsigned char pub[32], k[STORE_KEY_SIZE], *plain = NULL;
	size_t n = 0;
	int rc;

	if (len != 32 + STORE_NONCE_SIZE + STORE_KEY_SIZE + STORE_TAG_SIZE)
		return enr_error_set(ENR_E_CORRUPT, "a member's copy of the team key is damaged");
	if ((rc = enr_store__public_of(pub, priv)) < 0 ||
	    (rc = wrap_key(k, priv, wrapped, wrapped, pub)) < 0)
		return rc;
	rc = enr_store__unseal(&plain, &n, k, aad, wrapped + 32, len - 32);
	OPENSSL_cleanse(k, sizeof(k));
	if (rc < 0)
		return rc;
	memcpy(team_key, plain, STORE_KEY_SIZE);
	OPENSSL_clear_free(plain, n + 1);
	return 0;
}
