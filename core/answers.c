#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "answers.h"
#include "derenroll/config.h"
#include "derenroll/error.h"
#include "util.h"

#define MAX_ANSWER_SIZE (4 * 1024 * 1024)

/* Recordings read so far, kept for the process (a few dozen small files). */
struct cached {
	char *key; /* "vendor/name" */
	json_object *root;
	struct cached *next;
};

static pthread_mutex_t cache_lock = PTHREAD_MUTEX_INITIALIZER;
static struct cached *cache;

static bool safe_part(const char *s)
{
	if (!s || !s[0] || s[0] == '.')
		return false;
	for (; *s; s++)
		if (!(*s == '-' || *s == '_' || *s == '.' || (*s >= '0' && *s <= '9') ||
		      (*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z')))
			return false;
	return true;
}

static int load(json_object **out, const char *key)
{
	char *rel = NULL, *path = NULL, *text = NULL;
	json_object *root = NULL, *source = NULL;
	int rc;

	*out = NULL;
	rel = enr_util_printf("answers/%s.json", key);
	path = rel ? enr_config_asset_path(rel) : NULL;
	if (!path) {
		rc = enr_error_set(ENR_E_NOMEM, NULL);
		goto out;
	}
	rc = enr_util_read_file(&text, NULL, path, MAX_ANSWER_SIZE);
	if (rc < 0) {
		rc =
		    enr_error_set(rc, "recorded answer %s is missing or unreadable: %s", key, path);
		goto out;
	}
	root = json_tokener_parse(text);
	if (!root || !json_object_is_type(root, json_type_object) ||
	    !json_object_object_get_ex(root, "source", &source) ||
	    !json_object_is_type(source, json_type_string) ||
	    !json_object_object_get_ex(root, "body", NULL)) {
		rc = enr_error_set(
		    ENR_E_PARSE, "recorded answer %s is not JSON with \"source\" and \"body\": %s",
		    key, path);
		json_object_put(root);
		root = NULL;
		goto out;
	}
	*out = root;
out:
	free(text);
	free(path);
	free(rel);
	return rc;
}

int enr_answers__get(json_object **out, const char *vendor, const char *name)
{
	struct cached *c;
	char *key = NULL;
	int rc = 0;

	*out = NULL;
	if (!safe_part(vendor) || !safe_part(name))
		return enr_error_set(ENR_E_USAGE, "bad recorded answer name %s/%s",
		                     vendor ? vendor : "(null)", name ? name : "(null)");
	key = enr_util_printf("%s/%s", vendor, name);
	if (!key)
		return ENR_E_NOMEM;
	pthread_mutex_lock(&cache_lock);
	for (c = cache; c; c = c->next)
		if (strcmp(c->key, key) == 0)
			break;
	if (!c) {
		json_object *root = NULL;
		rc = load(&root, key);
		if (rc == 0 && !(c = calloc(1, sizeof(*c)))) {
			json_object_put(root);
			rc = enr_error_set(ENR_E_NOMEM, NULL);
		}
		if (rc == 0) {
			c->key = key;
			key = NULL;
			c->root = root;
			c->next = cache;
			cache = c;
		}
	}
	if (c)
		*out = c->root;
	pthread_mutex_unlock(&cache_lock);
	free(key);
	return rc;
}

void enr_answers__flush(void)
{
	pthread_mutex_lock(&cache_lock);
	while (cache) {
		struct cached *next = cache->next;
		json_object_put(cache->root);
		free(cache->key);
		free(cache);
		cache = next;
	}
	pthread_mutex_unlock(&cache_lock);
}

int enr_answers__body(json_object **out, const char *vendor, const char *name)
{
	json_object *root = NULL, *body = NULL;
	int rc;

	*out = NULL;
	rc = enr_answers__get(&root, vendor, name);
	if (rc < 0)
		return rc;
	json_object_object_get_ex(root, "body", &body);
	if (json_object_deep_copy(body, out, NULL) < 0)
		return enr_error_set(ENR_E_NOMEM, NULL);
	return 0;
}

int enr_answers__status(const char *vendor, const char *name)
{
	json_object *root = NULL, *status = NULL;

	if (enr_answers__get(&root, vendor, name) < 0 ||
	    !json_object_object_get_ex(root, "status", &status))
		return 200;
	return json_object_get_int(status);
}

bool enr_answers__set(json_object *obj, const char *path, json_object *value)
{
	const char *last = strrchr(path, '.');
	json_object *parent = obj;
	char *parent_path = NULL;

	if (last) {
		parent_path = strndup(path, (size_t)(last - path));
		parent = parent_path ? enr_util_json_at(obj, parent_path) : NULL;
		free(parent_path);
		last++;
	} else {
		last = path;
	}
	if (!parent || !json_object_is_type(parent, json_type_object) ||
	    !json_object_object_get_ex(parent, last, NULL)) {
		json_object_put(value);
		return false;
	}
	json_object_object_add(parent, last, value);
	return true;
}

static bool all_digits(const char *s)
{
	if (!*s || strlen(s) > 15)
		return false;
	for (; *s; s++)
		if (*s < '0' || *s > '9')
			return false;
	return true;
}

/* A value of the recorded type: a number where the vendor sends numbers. */
static json_object *like(json_object *recorded, const char *text)
{
	if (json_object_is_type(recorded, json_type_int) && all_digits(text))
		return json_object_new_int64(strtoll(text, NULL, 10));
	return json_object_new_string(text);
}

static const char *list_field(json_object *list, const char *field)
{
	json_object *v = NULL;

	if (!list || !json_object_object_get_ex(list, field, &v) ||
	    !json_object_is_type(v, json_type_string))
		return NULL;
	return json_object_get_string(v);
}

int enr_answers__sites(json_object **out, const char *vendor, const char *name,
                       const struct enr_answers_site *sites, size_t n)
{
	json_object *root = NULL, *list = NULL, *body = NULL, *array, *template = NULL;
	const char *path, *id_field, *name_field, *count_path;
	int rc;

	*out = NULL;
	rc = enr_answers__get(&root, vendor, name);
	if (rc < 0)
		return rc;
	json_object_object_get_ex(root, "list", &list);
	path = list_field(list, "path");
	id_field = list_field(list, "id");
	name_field = list_field(list, "name");
	count_path = list_field(list, "count");
	if (!id_field || !name_field)
		return enr_error_set(ENR_E_PARSE,
		                     "recorded answer %s/%s has no list.id and list.name", vendor,
		                     name);
	rc = enr_answers__body(&body, vendor, name);
	if (rc < 0)
		return rc;
	array = enr_util_json_at(body, path ? path : "");
	if (!array || !json_object_is_type(array, json_type_array) ||
	    json_object_array_length(array) == 0 ||
	    json_object_deep_copy(json_object_array_get_idx(array, 0), &template, NULL) < 0) {
		json_object_put(body);
		return enr_error_set(ENR_E_PARSE,
		                     "recorded answer %s/%s has no entry at list.path to copy",
		                     vendor, name);
	}
	json_object_array_del_idx(array, 0, json_object_array_length(array));
	for (size_t i = 0; i < n; i++) {
		json_object *entry = NULL, *recorded_id = NULL;
		if (json_object_deep_copy(template, &entry, NULL) < 0) {
			rc = enr_error_set(ENR_E_NOMEM, NULL);
			break;
		}
		json_object_object_get_ex(template, id_field, &recorded_id);
		json_object_object_add(entry, id_field, like(recorded_id, sites[i].id));
		json_object_object_add(entry, name_field, json_object_new_string(sites[i].name));
		json_object_array_add(array, entry);
	}
	json_object_put(template);
	if (rc == 0 && count_path)
		enr_answers__set(body, count_path, json_object_new_int64((long long)n));
	if (rc < 0) {
		json_object_put(body);
		return rc;
	}
	*out = body;
	return 0;
}
