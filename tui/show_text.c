/* A record as `derenroll show` prints it, and the wizard's enrolled systems show it. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <json-c/json.h>

#include "derenroll/lifecycle.h"
#include "derenroll/store.h"
#include "derenroll/tesla.h"
#include "derenroll/text.h"
#include "cli.h"

static void format_time(char *buf, size_t size, long long t)
{
	time_t tt = (time_t)t;
	struct tm tm;

	gmtime_r(&tt, &tm);
	strftime(buf, size, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/* 54 columns before the customer: it gets the rest of 80. */
#define LIST_ROW "%-10s  %-8s  %-9s  %-7s  %-10s  %s"

const char *cli_list_header(void)
{
	static char header[80];

	if (!header[0])
		snprintf(header, sizeof(header), LIST_ROW, "ID", "STATUS", "VENDOR", "METHOD",
		         "DUE", "CUSTOMER");
	return header;
}

char *cli_list_row(char *buf, size_t size, const struct enr_record *r, enum enr_status status,
                   long long due_at)
{
	char id[ENR_TEXT_VISIBLE_SIZE(10)], vendor[ENR_TEXT_VISIBLE_SIZE(9)];
	char method[ENR_TEXT_VISIBLE_SIZE(7)], customer[ENR_TEXT_VISIBLE_SIZE(26)];
	char due[16] = "-";

	if (status == ENR_STATUS_REJECTED) {
		snprintf(due, sizeof(due), "now");
	} else if (due_at) {
		time_t t = (time_t)due_at;
		struct tm tm;
		gmtime_r(&t, &tm);
		strftime(due, sizeof(due), "%Y-%m-%d", &tm);
	}
	snprintf(buf, size, LIST_ROW, enr_text_visible(id, sizeof(id), r->id, 10),
	         enr_status_name(status), enr_text_visible(vendor, sizeof(vendor), r->vendor, 9),
	         enr_text_visible(method, sizeof(method), r->method, 7), due,
	         enr_text_visible(customer, sizeof(customer), r->customer, 26));
	return buf;
}

/* "LABEL VALUE" with the value made visible (it comes from a vendor or a user).
 * The copy is wiped: with --reveal the value is a secret. */
static void print_field(FILE *out, const char *indent, int label_width, const char *label,
                        const char *value)
{
	char *shown = enr_text_visible_dup(value);

	fprintf(out, "%s%-*s %s\n", indent, label_width, label, shown ? shown : "");
	if (shown)
		explicit_bzero(shown, strlen(shown));
	free(shown);
}

static bool is_secret_field(const char *name)
{
	static const char *const secret[] = {"access_token", "refresh_token", "id_token",
	                                     "api_key",      "account_key",   "key_secret"};

	for (size_t i = 0; i < sizeof(secret) / sizeof(secret[0]); i++)
		if (strcmp(name, secret[i]) == 0)
			return true;
	return false;
}

/* The credentials object, one "  name: value" line per field, nested names dotted. */
static void print_credentials(FILE *out, struct json_object *obj, const char *prefix, bool reveal,
                              const char *hidden)
{
	json_object_object_foreach(obj, key, val)
	{
		char name[128];
		snprintf(name, sizeof(name), "%s%s", prefix, key);
		if (json_object_is_type(val, json_type_object)) {
			char sub[140];
			snprintf(sub, sizeof(sub), "%s.", name);
			print_credentials(out, val, sub, reveal, hidden);
		} else if (!json_object_is_type(val, json_type_null)) {
			char masked[128];
			snprintf(masked, sizeof(masked), "******** (%s)", hidden);
			print_field(out, "  ", 22, name,
			            is_secret_field(key) && !reveal ? masked
			                                            : json_object_get_string(val));
		}
	}
}

static void print_time(FILE *out, const char *label, long long t, const char *none)
{
	char buf[32];

	if (t)
		format_time(buf, sizeof(buf), t);
	fprintf(out, "%-24s %s\n", label, t ? buf : none);
}

int cli_show_text(FILE *out, const struct enr_record *r, long long now, long days, bool reveal,
                  const char *hidden)
{
	struct json_object *full = NULL, *cred = NULL;
	long long due = 0;
	enum enr_status status = enr_status_of(r, now, days, &due);
	char reason[1024];
	int rc;

	print_field(out, "", 24, "id", r->id);
	print_field(out, "", 24, "customer", r->customer);
	print_field(out, "", 24, "vendor", r->vendor);
	print_field(out, "", 24, "method", r->method);
	print_field(out, "", 24, "account", r->account ? r->account : "-");
	if (enr_tesla_record_endpoint(r))
		fprintf(out, "%-24s %s\n", "region",
		        enr_tesla_region_name(enr_tesla_region_of(r->region)));
	fprintf(out, "%-24s %s\n", "status", enr_status_name(status));
	enr_lifecycle_reason_text(reason, sizeof(reason), r, now, days);
	if (reason[0])
		print_field(out, "", 24, "why", reason);
	if (status == ENR_STATUS_REJECTED)
		fprintf(out, "%-24s %s\n", "customer needed by",
		        "now (the vendor refused the credentials)");
	else
		print_time(out, "customer needed by", due, "never");
	print_time(out, "access expires", r->access_expires_at, "-");
	print_time(out, "refresh expires", r->refresh_expires_at, "-");
	print_time(out, "created", r->created_at, "-");
	print_time(out, "updated", r->updated_at, "-");
	if (r->last_check.at || r->last_check.outcome) {
		print_time(out, "last check", r->last_check.at, "-");
		char *message = enr_text_visible_dup(r->last_check.message);
		fprintf(out, "%-24s %s%s%s\n", "last check result",
		        enr_record_outcome_name(r->last_check.outcome),
		        r->last_check.message ? ": " : "",
		        r->last_check.message && message ? message : "");
		free(message);
	} else {
		fprintf(out, "%-24s %s\n", "last check", "never");
	}
	fprintf(out, "sites\n");
	for (size_t i = 0; i < r->n_sites; i++) {
		char id[ENR_TEXT_VISIBLE_SIZE(64)];
		print_field(out, "  ", 22, enr_text_visible(id, sizeof(id), r->sites[i].id, 0),
		            r->sites[i].name);
	}
	rc = enr_record_to_json_object(&full, r, true);
	if (rc < 0)
		return rc;
	fprintf(out, "credentials (%s)\n", enr_record_cred_name(r->cred.type));
	if (json_object_object_get_ex(full, "credentials", &cred) &&
	    json_object_is_type(cred, json_type_object))
		print_credentials(out, cred, "", reveal, hidden);
	json_object_put(full);
	return 0;
}
