#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <microhttpd.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "helpers.h"
#include "httpd.h"

struct test_httpd {
	struct MHD_Daemon *daemon;
	test_handler handler;
	void *ctx;
	char url[64];
	unsigned port;
	volatile int stopping;
	pthread_mutex_t lock;
	unsigned requests;
};

struct upload {
	char *data;
	size_t len;
};

struct stall {
	struct test_httpd *server;
	size_t sent;
};

static void die(const char *what)
{
	fprintf(stderr, "test_httpd: %s\n", what);
	abort();
}

static ssize_t stall_reader(void *cls, uint64_t pos, char *buf, size_t max)
{
	struct stall *s = cls;
	static const char start[] = "{\"partial\": \"";

	(void)pos;
	if (s->sent == 0) {
		size_t n = sizeof(start) - 1 < max ? sizeof(start) - 1 : max;
		memcpy(buf, start, n);
		s->sent = n;
		return (ssize_t)n;
	}
	/* Thread per connection: blocking here only blocks this connection. */
	for (int i = 0; i < 3000 && !s->server->stopping; i++)
		usleep(10000);
	return MHD_CONTENT_READER_END_WITH_ERROR;
}

static ssize_t chunk_reader(void *cls, uint64_t pos, char *buf, size_t max)
{
	size_t total = *(size_t *)cls;
	size_t n;

	if (pos >= total)
		return MHD_CONTENT_READER_END_OF_STREAM;
	n = total - pos < max ? total - pos : max;
	memset(buf, 'x', n);
	return (ssize_t)n;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **con_cls)
{
	struct test_httpd *s = cls;
	struct upload *up = *con_cls;
	struct test_reply reply = {0};
	struct test_request req;
	struct MHD_Response *r = NULL;
	enum MHD_Result ret;

	(void)version;
	if (!up) {
		up = calloc(1, sizeof(*up));
		up->data = calloc(1, 1);
		*con_cls = up;
		return MHD_YES;
	}
	if (*upload_data_size) {
		up->data = realloc(up->data, up->len + *upload_data_size + 1);
		memcpy(up->data + up->len, upload_data, *upload_data_size);
		up->len += *upload_data_size;
		up->data[up->len] = '\0';
		*upload_data_size = 0;
		return MHD_YES;
	}
	req = (struct test_request){method, url, up->data, up->len, conn};
	reply.status = 200;
	s->handler(&req, &reply, s->ctx);
	pthread_mutex_lock(&s->lock);
	s->requests++;
	pthread_mutex_unlock(&s->lock);

	if (reply.mode == REPLY_STALL) {
		struct stall *st = calloc(1, sizeof(*st));
		st->server = s;
		r = MHD_create_response_from_callback(reply.stall_len, 256, stall_reader, st, free);
	} else if (reply.mode == REPLY_CHUNKED) {
		size_t *len = malloc(sizeof(*len));
		*len = reply.chunked_len;
		r = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 64 * 1024, chunk_reader,
		                                      len, free);
	} else {
		size_t len =
		    reply.body ? (reply.body_len ? reply.body_len : strlen(reply.body)) : 0;
		r = MHD_create_response_from_buffer(len, reply.body ? reply.body : (void *)"",
		                                    reply.body ? MHD_RESPMEM_MUST_FREE
		                                               : MHD_RESPMEM_PERSISTENT);
		reply.body = NULL;
	}
	free(reply.body);
	if (!r)
		die("cannot create a response");
	MHD_add_response_header(r, "Content-Type",
	                        reply.content_type ? reply.content_type : "application/json");
	for (size_t i = 0; i < reply.n_headers; i++)
		MHD_add_response_header(r, reply.headers[i][0], reply.headers[i][1]);
	ret = MHD_queue_response(conn, reply.status, r);
	MHD_destroy_response(r);
	return ret;
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode code)
{
	struct upload *up = *con_cls;

	(void)cls;
	(void)conn;
	(void)code;
	if (up) {
		free(up->data);
		free(up);
	}
	*con_cls = NULL;
}

struct test_httpd *test_httpd_start(test_handler handler, void *ctx, const char *key_pem,
                                    const char *cert_pem)
{
	struct test_httpd *s = calloc(1, sizeof(*s));
	struct sockaddr_in addr = {0};
	const union MHD_DaemonInfo *info;
	unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION;

	s->handler = handler;
	s->ctx = ctx;
	pthread_mutex_init(&s->lock, NULL);
	addr.sin_family = AF_INET;
	addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (key_pem) {
		flags |= MHD_USE_TLS;
		s->daemon = MHD_start_daemon(
		    flags, 0, NULL, NULL, on_request, s, MHD_OPTION_SOCK_ADDR, &addr,
		    MHD_OPTION_NOTIFY_COMPLETED, on_completed, NULL, MHD_OPTION_HTTPS_MEM_KEY,
		    key_pem, MHD_OPTION_HTTPS_MEM_CERT, cert_pem, MHD_OPTION_END);
	} else {
		s->daemon = MHD_start_daemon(
		    flags, 0, NULL, NULL, on_request, s, MHD_OPTION_SOCK_ADDR, &addr,
		    MHD_OPTION_NOTIFY_COMPLETED, on_completed, NULL, MHD_OPTION_END);
	}
	if (!s->daemon)
		die("cannot start the server");
	info = MHD_get_daemon_info(s->daemon, MHD_DAEMON_INFO_BIND_PORT);
	if (!info || !info->port)
		die("no port");
	s->port = info->port;
	snprintf(s->url, sizeof(s->url), "%s://127.0.0.1:%u", key_pem ? "https" : "http", s->port);
	return s;
}

const char *test_httpd_url(const struct test_httpd *s)
{
	return s->url;
}

unsigned test_httpd_port(const struct test_httpd *s)
{
	return s->port;
}

unsigned test_httpd_requests(struct test_httpd *s)
{
	unsigned n;

	pthread_mutex_lock(&s->lock);
	n = s->requests;
	pthread_mutex_unlock(&s->lock);
	return n;
}

void test_httpd_stop(struct test_httpd *s)
{
	if (!s)
		return;
	s->stopping = 1;
	MHD_stop_daemon(s->daemon);
	pthread_mutex_destroy(&s->lock);
	free(s);
}

const char *test_request_header(const struct test_request *req, const char *name)
{
	return MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND, name);
}

const char *test_request_arg(const struct test_request *req, const char *name)
{
	return MHD_lookup_connection_value(req->conn, MHD_GET_ARGUMENT_KIND, name);
}

static enum MHD_Result count_arg(void *cls, enum MHD_ValueKind kind, const char *key,
                                 const char *value)
{
	(void)kind;
	(void)key;
	(void)value;
	(*(unsigned *)cls)++;
	return MHD_YES;
}

unsigned test_request_arg_count(const struct test_request *req)
{
	unsigned n = 0;

	MHD_get_connection_values(req->conn, MHD_GET_ARGUMENT_KIND, count_arg, &n);
	return n;
}

static void decode(char *s)
{
	char *o = s;

	for (char *p = s; *p; p++) {
		if (*p == '+') {
			*o++ = ' ';
		} else if (*p == '%' && p[1] && p[2]) {
			char hex[3] = {p[1], p[2], 0};
			*o++ = (char)strtol(hex, NULL, 16);
			p += 2;
		} else {
			*o++ = *p;
		}
	}
	*o = '\0';
}

char *test_form_value(const char *body, const char *name)
{
	char *copy = strdup(body), *save = NULL, *result = NULL;

	for (char *pair = strtok_r(copy, "&", &save); pair; pair = strtok_r(NULL, "&", &save)) {
		char *eq = strchr(pair, '=');
		if (!eq)
			continue;
		*eq = '\0';
		decode(pair);
		if (strcmp(pair, name) == 0) {
			decode(eq + 1);
			result = strdup(eq + 1);
			break;
		}
	}
	free(copy);
	return result;
}

void test_reply_printf(struct test_reply *reply, const char *fmt, ...)
{
	va_list ap;

	free(reply->body);
	va_start(ap, fmt);
	if (vasprintf(&reply->body, fmt, ap) < 0)
		die("out of memory");
	va_end(ap);
	reply->body_len = 0;
}

void test_reply_header(struct test_reply *reply, const char *name, const char *value)
{
	reply->headers[reply->n_headers][0] = name;
	reply->headers[reply->n_headers][1] = value;
	reply->n_headers++;
}

static void add_ext(X509 *cert, int nid, const char *value)
{
	X509V3_CTX ctx;
	X509_EXTENSION *ext;

	X509V3_set_ctx_nodb(&ctx);
	X509V3_set_ctx(&ctx, cert, cert, NULL, NULL, 0);
	ext = X509V3_EXT_conf_nid(NULL, &ctx, nid, value);
	if (!ext || !X509_add_ext(cert, ext, -1))
		die("cannot add a certificate extension");
	X509_EXTENSION_free(ext);
}

static char *bio_string(BIO *bio)
{
	char *data;
	long len = BIO_get_mem_data(bio, &data);
	char *copy = malloc((size_t)len + 1);

	memcpy(copy, data, (size_t)len);
	copy[len] = '\0';
	BIO_free(bio);
	return copy;
}

void test_make_cert(char **key_pem, char **cert_pem)
{
	EVP_PKEY *key = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
	X509 *cert = X509_new();
	X509_NAME *name;
	BIO *kb = BIO_new(BIO_s_mem()), *cb = BIO_new(BIO_s_mem());

	if (!key || !cert || !kb || !cb)
		die("cannot make a key");
	X509_set_version(cert, 2);
	ASN1_INTEGER_set(X509_get_serialNumber(cert), 1);
	X509_gmtime_adj(X509_getm_notBefore(cert), -3600);
	X509_gmtime_adj(X509_getm_notAfter(cert), 86400);
	X509_set_pubkey(cert, key);
	name = X509_get_subject_name(cert);
	X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)"localhost", -1,
	                           -1, 0);
	X509_set_issuer_name(cert, name);
	add_ext(cert, NID_basic_constraints, "critical,CA:TRUE");
	add_ext(cert, NID_key_usage, "critical,digitalSignature,keyCertSign");
	add_ext(cert, NID_subject_alt_name, "DNS:localhost,IP:127.0.0.1");
	add_ext(cert, NID_subject_key_identifier, "hash");
	if (!X509_sign(cert, key, EVP_sha256()))
		die("cannot sign the certificate");
	if (!PEM_write_bio_PrivateKey(kb, key, NULL, NULL, 0, NULL, NULL) ||
	    !PEM_write_bio_X509(cb, cert))
		die("cannot write PEM");
	*key_pem = bio_string(kb);
	*cert_pem = bio_string(cb);
	X509_free(cert);
	EVP_PKEY_free(key);
}

unsigned test_closed_port(int *fd_out)
{
	struct sockaddr_in addr = {0};
	socklen_t len = sizeof(addr);
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	unsigned port;

	addr.sin_family = AF_INET;
	addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (fd < 0 || bind(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0 ||
	    getsockname(fd, (struct sockaddr *)&addr, &len) < 0)
		die("cannot find a free port");
	port = ntohs(addr.sin_port);
	*fd_out = fd; /* bound but never listening: connecting is refused */
	return port;
}
