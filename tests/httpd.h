#ifndef DERENROLL_TEST_HTTPD_H
#define DERENROLL_TEST_HTTPD_H

/*
 * A small libmicrohttpd server for the integration tests: 127.0.0.1, a port
 * of its own, one thread per connection (so a handler may block), optionally
 * HTTPS. Each test answers what it needs from its handler. Not a vendor
 * simulator: that is the sandbox's job.
 */

#include <stdbool.h>
#include <stddef.h>

struct MHD_Connection;

struct test_request {
	const char *method;
	const char *path;
	const char *body; /* NUL-terminated */
	size_t body_len;
	struct MHD_Connection *conn;
};

enum test_reply_mode {
	REPLY_NORMAL,  /* status, headers, body */
	REPLY_STALL,   /* announces `stall_len` bytes, sends a few, then stalls */
	REPLY_CHUNKED, /* `chunked_len` bytes of 'x' without a Content-Length */
};

struct test_reply {
	unsigned status;
	const char *content_type; /* default application/json */
	char *body;               /* malloc'd (freed by the server) or NULL */
	size_t body_len;          /* 0: strlen(body) */
	const char *headers[8][2];
	size_t n_headers;
	enum test_reply_mode mode;
	size_t stall_len;
	size_t chunked_len;
};

/* Fills `reply` for `req`; runs on the connection's thread. */
typedef void (*test_handler)(const struct test_request *req, struct test_reply *reply, void *ctx);

struct test_httpd;

/* Starts on 127.0.0.1 with a random port; HTTPS when key and cert PEM are given.
 * Aborts the test on failure. */
struct test_httpd *test_httpd_start(test_handler handler, void *ctx, const char *key_pem,
                                    const char *cert_pem);
/* "http://127.0.0.1:PORT" (or https). */
const char *test_httpd_url(const struct test_httpd *s);
unsigned test_httpd_port(const struct test_httpd *s);
/* Requests answered so far. */
unsigned test_httpd_requests(struct test_httpd *s);
/* Stops (stalled replies give up at once) and frees. */
void test_httpd_stop(struct test_httpd *s);

/* A request header, a query argument (decoded), a form field of the body
 * (decoded, malloc'd), or NULL. */
const char *test_request_header(const struct test_request *req, const char *name);
const char *test_request_arg(const struct test_request *req, const char *name);
char *test_form_value(const char *body, const char *name);
/* Number of query arguments. */
unsigned test_request_arg_count(const struct test_request *req);

/* reply->body = printf(...). */
void test_reply_printf(struct test_reply *reply, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
void test_reply_header(struct test_reply *reply, const char *name, const char *value);

/* A self-signed certificate for 127.0.0.1 and localhost that is its own CA. */
void test_make_cert(char **key_pem, char **cert_pem);

/* A port on 127.0.0.1 that is bound but not listening, so connecting is
 * refused; close *fd when done. */
unsigned test_closed_port(int *fd);

#endif
