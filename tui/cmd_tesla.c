/* derenroll tesla register: the company's app, registered once per Fleet API region. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "derenroll/config.h"
#include "derenroll/error.h"
#include "derenroll/tesla.h"
#include "derenroll/text.h"
#include "derenroll/vendor.h"
#include "cli.h"
#include "store_cli.h"

#define EXIT_USAGE 2

static void usage(FILE *out)
{
	fprintf(
	    out,
	    "Usage: derenroll tesla register --domain DOMAIN [--region REGION] [--key-url URL]\n"
	    "  --domain DOMAIN   the app's domain, as registered at developer.tesla.com; it\n"
	    "                    serves the public key at https://DOMAIN/.well-known/\n"
	    "                    appspecific/com.tesla.3p.public-key.pem\n"
	    "  --region REGION   na (North America, Asia-Pacific; the default), eu (Europe,\n"
	    "                    Middle East, Africa) or cn (China)\n"
	    "  --key-url URL     where to check the public key instead ({domain} is replaced;\n"
	    "                    default: [vendor.tesla] public_key_url)\n"
	    "Checks that the public key is served, gets the app's partner token for the region\n"
	    "and registers the domain there (POST /api/1/partner_accounts). Run it once for\n"
	    "every region the company's customers live in: until then Tesla answers 412.\n");
}

static void ok(const char *fmt, const char *a, const char *b)
{
	char *line = NULL, *shown = NULL;

	/* The domain and the key's URL come from the user. */
	if (asprintf(&line, fmt, a, b) >= 0)
		shown = enr_text_visible_dup(line);
	printf("\u2713 %s\n", shown ? shown : "");
	free(shown);
	free(line);
	fflush(stdout);
}

/* Prints the ✗ line of the step that failed; returns the exit code. */
static int failed(const char *step, int rc)
{
	char *message = enr_text_visible_dup(enr_error_last());

	printf("\u2717 %s: %s\n", step, message ? message : "");
	free(message);
	fflush(stdout);
	return enr_error_exit_code(rc);
}

static int do_register(struct cli_globals *g, const char *domain, enum enr_tesla_region region)
{
	const struct enr_vendor *tesla = enr_catalog_find(g->catalog, "tesla");
	const char *name = enr_tesla_region_name(region);
	struct enr_store *store = NULL;
	char *token = NULL, *key_url = NULL;
	bool registered = false;
	int rc, status = 0;

	if (!tesla)
		return cli_fail(ENR_E_CONFIG);
	/* The client secret may live in the store only. */
	if (!enr_config_get(g->cfg, "vendor.tesla", "client_secret") &&
	    !enr_config_get(g->cfg, "vendor.tesla", "client_secret_file") &&
	    (rc = cli_open_store_some(g, false, &store)) < 0)
		return cli_fail(rc);
	if ((rc = enr_tesla_public_key_url(&key_url, tesla, g->cfg, domain)) < 0) {
		status = cli_fail(rc);
		goto out;
	}
	if ((rc = enr_tesla_public_key_check(tesla, g->cfg, domain)) < 0) {
		status = failed("public key", rc);
		goto out;
	}
	ok("public key served at %s%s", key_url, "");
	if ((rc = enr_tesla_partner_token(&token, tesla, g->cfg, region)) < 0) {
		status = failed("partner token", rc);
		goto out;
	}
	ok("partner token for region %s%s", name, "");
	if ((rc = enr_tesla_registered(&registered, tesla, g->cfg, region, token, domain)) < 0) {
		status = failed("registration check", rc);
		goto out;
	}
	if (!registered &&
	    ((rc = enr_tesla_register(tesla, g->cfg, region, token, domain)) < 0 ||
	     (rc = enr_tesla_registered(&registered, tesla, g->cfg, region, token, domain)) < 0)) {
		status = failed("registration", rc);
		goto out;
	}
	if (!registered) {
		enr_error_set(ENR_E_BADRESPONSE,
		              "Tesla accepted the registration but does not list %s in region %s",
		              domain, name);
		status = failed("registration", ENR_E_BADRESPONSE);
		goto out;
	}
	ok("%s is registered in region %s", domain, name);
out:
	enr_config_free_secret(token);
	free(key_url);
	cli_close_store(g, store);
	return status;
}

static int register_cmd(struct cli_globals *g, int argc, char **argv)
{
	static const struct option options[] = {
	    {"domain", required_argument, NULL, 'd'},
	    {"region", required_argument, NULL, 'r'},
	    {"key-url", required_argument, NULL, 'k'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	const char *domain = NULL, *key_url = NULL;
	enum enr_tesla_region region = ENR_TESLA_NA;
	int opt, rc;

	while ((opt = getopt_long(argc, argv, "h", options, NULL)) != -1) {
		switch (opt) {
		case 'd':
			domain = optarg;
			break;
		case 'r':
			if (enr_tesla_region_parse(&region, optarg) < 0) {
				cli_error("%s", enr_error_last());
				return EXIT_USAGE;
			}
			break;
		case 'k':
			key_url = optarg;
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			cli_error("%s: unknown option or missing argument (try 'derenroll tesla "
			          "--help')",
			          argv[optind - 1]);
			return EXIT_USAGE;
		}
	}
	if (optind != argc || !domain) {
		cli_error(!domain ? "tesla register needs --domain DOMAIN (the app's domain)"
		                  : "tesla register takes no operand");
		return EXIT_USAGE;
	}
	if ((rc = cli_load_config(g)) < 0 ||
	    (key_url &&
	     (rc = enr_config_set(g->cfg, "vendor.tesla", "public_key_url", key_url)) < 0))
		return cli_fail(rc);
	return do_register(g, domain, region);
}

int cmd_tesla(struct cli_globals *g, int argc, char **argv)
{
	if (argc >= 2 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
		usage(stdout);
		return 0;
	}
	if (argc < 2 || strcmp(argv[1], "register") != 0) {
		cli_error("tesla: the sub-command is register (try 'derenroll tesla --help')");
		return EXIT_USAGE;
	}
	return register_cmd(g, argc - 1, argv + 1);
}
