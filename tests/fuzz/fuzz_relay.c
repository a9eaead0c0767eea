/*
 * The relay's requests: what enr_relay_handle() makes of them, through a
 * libmicrohttpd daemon of the harness's own (no listening socket: each
 * request comes over a socketpair, from 127.0.0.1). An input is up to four
 * requests separated by lines "%%", each
 *   METHOD TARGET
 *   Header: value          (any number)
 *                          (an empty line)
 *   body
 * sent in that order over one connection each, so that a link made by the
 * first can be used by the next: "{code}" in a target becomes the code of
 * the last short link the relay made. The harness adds Content-Length and
 * Connection: close (and drops those and Transfer-Encoding from the input),
 * so that every request is complete and its connection ends with its answer.
 * The bearer secret of the seeds is the one below; polls never wait (the
 * daemon cannot suspend connections) and the Join proxy is off (no Derapi
 * client in the config): both would reach beyond the harness. With
 * FUZZ_RELAY_SHOW set, the answers are printed.
 */
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <microhttpd.h>

#include "common.h"
#include "derenroll/log.h"
#include "derenroll/relay.h"

#define SECRET       "fuzz-relay-secret-0123456789"
#define MAX_REQUESTS 4

static struct enr_relay *relay;
static struct MHD_Daemon *mhd;
static char last_code[64];

static enum MHD_Result access_handler(void *cls, struct MHD_Connection *c, const char *url,
                                      const char *method, const char *version,
                                      const char *upload_data, size_t *upload_data_size,
                                      void **con_cls)
{
	(void)cls;
	(void)version;
	return enr_relay_handle(relay, c, url, method, upload_data, upload_data_size, con_cls)
	           ? MHD_YES
	           : MHD_NO;
}

static void request_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                              enum MHD_RequestTerminationCode toe)
{
	(void)cls;
	(void)c;
	(void)toe;
	enr_relay_request_done(relay, con_cls);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	struct enr_relay_options opts = {
	    .public_url = "https://relay.example.com",
	    .secret = SECRET,
	    .catalog = fuzz_catalog(),
	    .trusted_proxy = "127.0.0.1",
	    .max_records = 200,
	    .rate_burst = 1u << 30,
	    .rate_per_second = 1e9,
	};

	(void)argc;
	(void)argv;
	fuzz_init();
	if (enr_relay_new(&relay, &opts) < 0)
		abort();
	mhd =
	    MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_NO_LISTEN_SOCKET, 0, NULL,
	                     NULL, access_handler, NULL, MHD_OPTION_NOTIFY_COMPLETED,
	                     request_completed, NULL, MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)10,
	                     MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)16 * 1024, MHD_OPTION_END);
	if (!mhd)
		abort();
	return 0;
}

struct text {
	char *data;
	size_t len, cap;
};

static void add(struct text *t, const void *p, size_t n)
{
	if (t->len + n + 1 > t->cap) {
		t->cap = (t->len + n + 1) * 2;
		t->data = realloc(t->data, t->cap);
		if (!t->data)
			abort();
	}
	memcpy(t->data + t->len, p, n);
	t->len += n;
	t->data[t->len] = '\0';
}

static void add_str(struct text *t, const char *s)
{
	add(t, s, strlen(s));
}

/* A line of the head as it goes on the wire: no CR, LF or NUL inside, {code} replaced. */
static void add_line(struct text *t, const uint8_t *p, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		if (p[i] == '\r' || p[i] == '\0')
			continue;
		if (n - i >= 6 && memcmp(p + i, "{code}", 6) == 0) {
			add_str(t, last_code);
			i += 5;
			continue;
		}
		add(t, p + i, 1);
	}
	add_str(t, "\r\n");
}

static bool header_is(const uint8_t *p, size_t n, const char *name)
{
	size_t len = strlen(name);
	return n > len && p[len] == ':' && strncasecmp((const char *)p, name, len) == 0;
}

/* The HTTP request for one part of the input. */
static void build_request(struct text *req, const uint8_t *p, size_t n)
{
	const uint8_t *end = p + n;
	const uint8_t *nl = memchr(p, '\n', n);
	char length[64];

	add_line(req, p, (size_t)((nl ? nl : end) - p));
	req->len -= 2; /* the request line gets its version */
	add_str(req, " HTTP/1.1\r\n");
	p = nl ? nl + 1 : end;
	while (p < end) {
		nl = memchr(p, '\n', (size_t)(end - p));
		size_t len = (size_t)((nl ? nl : end) - p);
		if (len == 0 || (len == 1 && p[0] == '\r')) {
			p = nl ? nl + 1 : end;
			break;
		}
		if (!header_is(p, len, "Content-Length") && !header_is(p, len, "Connection") &&
		    !header_is(p, len, "Transfer-Encoding"))
			add_line(req, p, len);
		p = nl ? nl + 1 : end;
	}
	snprintf(length, sizeof(length), "Content-Length: %zu\r\nConnection: close\r\n\r\n",
	         (size_t)(end - p));
	add_str(req, length);
	add(req, p, (size_t)(end - p));
}

/* Notes the code of a short link in an answer ("url":"https://relay.example.com/s/CODE"). */
static void note_code(const char *answer)
{
	const char *at = strstr(answer, "\"url\":\"https://relay.example.com/s/");
	size_t n;

	if (!at)
		return;
	at += strlen("\"url\":\"https://relay.example.com/s/");
	n = strcspn(at, "\"");
	if (n < sizeof(last_code)) {
		memcpy(last_code, at, n);
		last_code[n] = '\0';
	}
}

static void send_request(const struct text *req)
{
	struct sockaddr_in peer = {.sin_family = AF_INET, .sin_port = htons(40000)};
	struct text answer = {0};
	size_t sent = 0;
	int sv[2];

	peer.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
		abort();
	if (MHD_add_connection(mhd, sv[0], (struct sockaddr *)&peer, sizeof(peer)) != MHD_YES)
		abort();
	/* Writing and reading in turn: an answer may come before the whole body is read. */
	for (;;) {
		struct pollfd pfd = {.fd = sv[1], .events = POLLIN};
		char buf[4096];
		ssize_t n;

		if (sent < req->len)
			pfd.events |= POLLOUT;
		if (poll(&pfd, 1, 20000) <= 0)
			break;
		if (pfd.revents & POLLOUT) {
			n = send(sv[1], req->data + sent, req->len - sent, MSG_NOSIGNAL);
			if (n < 0)
				sent = req->len;
			else
				sent += (size_t)n;
			if (sent == req->len)
				shutdown(sv[1], SHUT_WR);
		}
		if (pfd.revents & (POLLIN | POLLHUP | POLLERR)) {
			n = recv(sv[1], buf, sizeof(buf), 0);
			if (n <= 0)
				break;
			add(&answer, buf, (size_t)n);
		}
	}
	close(sv[1]);
	if (answer.data)
		note_code(answer.data);
	if (getenv("FUZZ_RELAY_SHOW")) /* to see what a seed gets */
		fprintf(stderr, "%s\n----\n", answer.data ? answer.data : "(no answer)");
	free(answer.data);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const uint8_t *p = data, *end = data + size;

	for (int i = 0; i < MAX_REQUESTS && p < end; i++) {
		const uint8_t *sep = NULL;
		struct text req = {0};

		for (const uint8_t *q = p; q + 4 <= end; q++)
			if (memcmp(q, "\n%%\n", 4) == 0) {
				sep = q;
				break;
			}
		build_request(&req, p, (size_t)((sep ? sep : end) - p));
		send_request(&req);
		free(req.data);
		p = sep ? sep + 4 : end;
	}
	enr_log_clear_secrets();
	return 0;
}
