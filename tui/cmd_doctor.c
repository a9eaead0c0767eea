/* derenroll doctor: the company's setup checked before the first customer. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "derenroll/config.h"
#include "derenroll/doctor.h"
#include "derenroll/error.h"
#include "derenroll/sandbox.h"
#include "derenroll/text.h"
#include "cli.h"
#include "store_cli.h"

#define EXIT_USAGE  2
#define EXIT_FAILED 1

static void usage(FILE *out)
{
	fprintf(out, "Usage: derenroll [--demo] doctor [--json]\n"
	             "Checks what needs no customer, for every configured vendor, Derapi and the\n"
	             "relay: the app's client credentials, redirect URIs, company accounts, the\n"
	             "relay and its secret. One line per check; vendors without settings are\n"
	             "skipped. Exit 0 when every check passes, 1 when one fails. With --demo,\n"
	             "the built-in sandbox's setup is checked.\n"
	             "  --json  an array of {vendor, check, ok, skipped, message}\n");
}

static void print_json(const struct enr_doctor_report *report)
{
	json_object *list = json_object_new_array();
	char *text = NULL;

	for (size_t i = 0; i < enr_doctor_count(report); i++) {
		const struct enr_doctor_result *r = enr_doctor_at(report, i);
		json_object *o = json_object_new_object();
		json_object_object_add(o, "vendor", json_object_new_string(r->vendor));
		json_object_object_add(o, "check", json_object_new_string(r->check));
		json_object_object_add(o, "ok",
		                       json_object_new_boolean(r->outcome != ENR_DOCTOR_FAILED));
		json_object_object_add(o, "skipped",
		                       json_object_new_boolean(r->outcome == ENR_DOCTOR_SKIPPED));
		json_object_object_add(o, "message", json_object_new_string(r->message));
		json_object_array_add(list, o);
	}
	/* json-c passes bytes that are not UTF-8 through: the output must be UTF-8. */
	text = enr_text_utf8(json_object_to_json_string_ext(
	    list, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_NOSLASHESCAPE));
	puts(text ? text : "null");
	free(text);
	json_object_put(list);
}

static void print_lines(const struct enr_doctor_report *report)
{
	static const char *const marks[] = {
	    [ENR_DOCTOR_OK] = "✓",
	    [ENR_DOCTOR_FAILED] = "✗",
	    [ENR_DOCTOR_SKIPPED] = "-",
	};

	for (size_t i = 0; i < enr_doctor_count(report); i++) {
		const struct enr_doctor_result *r = enr_doctor_at(report, i);
		char *message = enr_text_visible_dup(r->message);
		printf("%s %s: %s: %s\n", marks[r->outcome], r->vendor,
		       r->outcome == ENR_DOCTOR_SKIPPED && strcmp(r->check, "configured") == 0
		           ? "skipped"
		           : r->check,
		       message ? message : "");
		free(message);
	}
}

int cmd_doctor(struct cli_globals *g, int argc, char **argv)
{
	static const struct option options[] = {
	    {"json", no_argument, NULL, 'j'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	struct enr_doctor_report *report = NULL;
	struct enr_store *store = NULL;
	struct enr_sandbox *demo = NULL;
	bool json = false;
	int opt, rc, status;

	while ((opt = getopt_long(argc, argv, "h", options, NULL)) != -1) {
		if (opt == 'h') {
			usage(stdout);
			return 0;
		}
		if (opt != 'j') {
			cli_error(
			    "doctor: unknown option or missing argument (try 'derenroll doctor "
			    "--help')");
			return EXIT_USAGE;
		}
		json = true;
	}
	if (optind != argc) {
		cli_error("doctor takes no operand (try 'derenroll doctor --help')");
		return EXIT_USAGE;
	}
	/* --demo checks the built-in sandbox's world. */
	rc = g->demo ? cli_demo_sandbox(g, &demo) : 0;
	/* The company's secrets may live in the store. */
	if (rc == 0)
		rc = cli_open_store_some(g, false, &store);
	if (rc == 0)
		rc = enr_doctor_run(&report, g->catalog, g->cfg);
	if (rc < 0) {
		status = cli_fail(rc);
		goto out;
	}
	if (json)
		print_json(report);
	else
		print_lines(report);
	status = enr_doctor_passed(report) ? 0 : EXIT_FAILED;
out:
	enr_doctor_report_free(report);
	cli_close_store(g, store);
	enr_sandbox_stop(demo);
	return status;
}
