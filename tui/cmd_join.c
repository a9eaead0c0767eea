/* derenroll join create-flow: a Derapi Join flow, made once by the company admin. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "derenroll/config.h"
#include "derenroll/error.h"
#include "derenroll/join.h"
#include "derenroll/text.h"
#include "derenroll/vendor.h"
#include "cli.h"
#include "store_cli.h"

#define EXIT_USAGE  2
#define MAX_VENDORS 16

static void usage(FILE *out)
{
	fprintf(out, "Usage: derenroll join create-flow --redirect-uri URL --vendors LIST "
	             "[--program ID] [--save]\n"
	             "  --redirect-uri URL  where Derapi sends the customer back: the relay's "
	             "/callback\n"
	             "                      (default: [relay] url + /callback when set)\n"
	             "  --vendors LIST      vendor ids, comma separated (tesla,sma,enphase,...)\n"
	             "  --program ID        the Derapi program enrollments join (default: [derapi] "
	             "program_id)\n"
	             "  --save              write the new flow's ID to [derapi] flow_id in "
	             "config.ini\n"
	             "Prints the flow ID. Enrollments with --method join then use that flow.\n");
}

/* Splits LIST into the vendors' Derapi names (pointers into the catalogue). */
static int parse_vendors(const char **out, size_t *n, const struct enr_catalog *catalog, char *list)
{
	char *save = NULL;

	*n = 0;
	for (char *tok = strtok_r(list, ", ", &save); tok; tok = strtok_r(NULL, ", ", &save)) {
		const struct enr_vendor *v = enr_catalog_find(catalog, tok);
		if (!v)
			return ENR_E_USAGE;
		if (!enr_vendor_method(v, "join") || strcmp(v->id, "derapi") == 0)
			return enr_error_set(ENR_E_USAGE,
			                     "%s cannot be enrolled through Derapi Join", v->name);
		if (*n == MAX_VENDORS)
			return enr_error_set(ENR_E_USAGE, "at most %d vendors", MAX_VENDORS);
		out[(*n)++] = enr_join_vendor_name(v);
	}
	if (*n == 0)
		return enr_error_set(ENR_E_USAGE, "--vendors lists no vendor");
	return 0;
}

static int create_flow(struct cli_globals *g, int argc, char **argv)
{
	static const struct option options[] = {
	    {"redirect-uri", required_argument, NULL, 'r'},
	    {"vendors", required_argument, NULL, 'v'},
	    {"program", required_argument, NULL, 'p'},
	    {"save", no_argument, NULL, 's'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	const char *vendors[MAX_VENDORS];
	struct enr_join_flow_options opts = {0};
	const char *redirect = NULL, *program = NULL, *path;
	char *list = NULL, *default_redirect = NULL, *flow = NULL, *default_path = NULL;
	char *shown = NULL;
	struct enr_store *store = NULL;
	bool save = false;
	int opt, rc, status = 0;

	while ((opt = getopt_long(argc, argv, "h", options, NULL)) != -1) {
		switch (opt) {
		case 'r':
			redirect = optarg;
			break;
		case 'v':
			free(list);
			list = strdup(optarg);
			break;
		case 'p':
			program = optarg;
			break;
		case 's':
			save = true;
			break;
		case 'h':
			usage(stdout);
			free(list);
			return 0;
		default:
			cli_error(
			    "%s: unknown option or missing argument (try 'derenroll join --help')",
			    argv[optind - 1]);
			free(list);
			return EXIT_USAGE;
		}
	}
	if (optind != argc || !list) {
		cli_error(!list ? "join create-flow needs --vendors LIST (tesla,sma,...)"
		                : "join create-flow takes no operand");
		free(list);
		return EXIT_USAGE;
	}
	rc = cli_load_config(g);
	if (rc == 0)
		rc = parse_vendors(vendors, &opts.n_vendors, g->catalog, list);
	/* The Derapi client secret may live in the store only. */
	if (rc == 0 && enr_config_get(g->cfg, "derapi", "client_id") &&
	    !enr_join_available(g->cfg, NULL))
		rc = cli_open_store_some(g, false, &store);
	if (rc < 0) {
		status = cli_fail(rc);
		goto out;
	}
	if (!redirect && enr_config_get(g->cfg, "relay", "url")) {
		const char *relay = enr_config_get(g->cfg, "relay", "url");
		size_t len = strlen(relay);
		while (len > 0 && relay[len - 1] == '/')
			len--;
		if (asprintf(&default_redirect, "%.*s/callback", (int)len, relay) < 0)
			default_redirect = NULL;
		redirect = default_redirect;
	}
	if (!redirect) {
		cli_error("join create-flow needs --redirect-uri URL (the relay's /callback)");
		status = EXIT_USAGE;
		goto out;
	}
	opts.redirect_uri = redirect;
	opts.program_id = program ? program : enr_config_get(g->cfg, "derapi", "program_id");
	opts.vendors = vendors;
	rc = enr_join_create_flow(&flow, g->catalog, g->cfg, &opts);
	if (rc < 0) {
		status = cli_fail(rc);
		goto out;
	}
	shown = enr_text_visible_dup(flow);
	printf("%s\n", shown ? shown : "");
	free(shown);
	fflush(stdout);
	if (save) {
		path = g->config_path ? g->config_path : enr_config_path(g->cfg);
		if (!path)
			path = default_path = enr_config_default_path();
		rc = path ? enr_config_save_key(path, "derapi", "flow_id", flow)
		          : enr_error_last_code();
		if (rc < 0)
			status = cli_fail(rc);
		else
			cli_error("saved [derapi] flow_id = %s in %s", flow, path);
	}
out:
	cli_close_store(g, store);
	free(flow);
	free(list);
	free(default_redirect);
	free(default_path);
	return status;
}

int cmd_join(struct cli_globals *g, int argc, char **argv)
{
	if (argc >= 2 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
		usage(stdout);
		return 0;
	}
	if (argc < 2 || strcmp(argv[1], "create-flow") != 0) {
		cli_error("join: the sub-command is create-flow (try 'derenroll join --help')");
		return EXIT_USAGE;
	}
	return create_flow(g, argc - 1, argv + 1);
}
