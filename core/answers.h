#ifndef DERENROLL_ANSWERS_H
#define DERENROLL_ANSWERS_H

/*
 * Recorded vendor answers: datadir/answers/<vendor>/<name>.json, the shapes
 * the vendors really send (each file names its source). The sandbox builds its
 * answers from them and the tests feed them to the client's parsers, so the
 * two cannot drift apart together. Internal to the core and its tests; the
 * format is in assets/answers/README.md.
 */

#include <stdbool.h>
#include <stddef.h>

#include <json-c/json.h>

/* One site as the sandbox fills it into a recorded site list. */
struct enr_answers_site {
	const char *id; /* decimal digits are sent as a number where the recording has one */
	const char *name;
};

/*
 * The whole recording `vendor`/`name` (the file, parsed and checked: an
 * object with "source" and "body"), read once and kept for the process.
 * Borrowed: never put it. ENR_E_NOTFOUND names the file; ENR_E_PARSE when it
 * is not a valid recording.
 */
int enr_answers__get(json_object **out, const char *vendor, const char *name);

/* A deep copy of the recording's body (the caller puts it). */
int enr_answers__body(json_object **out, const char *vendor, const char *name);

/* The recording's HTTP status (200 when it names none). */
int enr_answers__status(const char *vendor, const char *name);

/*
 * The recorded site list with `sites` in place of the recorded ones: the
 * array at the recording's "list.path" ("" or absent: the body itself) is
 * refilled with copies of its first entry, each with "list.id" and
 * "list.name" set, and a "list.count" beside it (when the recording has one)
 * set to n. The caller puts it.
 */
int enr_answers__sites(json_object **out, const char *vendor, const char *name,
                       const struct enr_answers_site *sites, size_t n);

/*
 * Replaces the value at the dot `path` of `obj` with `value` (taken) only
 * where the recording has that field: returns false, and puts `value`, when
 * it is absent, so the sandbox never sends a field the vendor does not.
 */
bool enr_answers__set(json_object *obj, const char *path, json_object *value);

/* Drops the process's cache (tests that change the data directory). */
void enr_answers__flush(void);

#endif
