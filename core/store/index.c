/*
 * The store's lookup index: record id -> position, (vendor, site id) ->
 * position, so that a put, a get or a site search among 100,000 records does
 * not walk them all.
 *
 * It is a cache of store->data, never the truth: every hit is checked against
 * the record now at that position, and the index serves a store_data only
 * while it is the one it was built for (the same records array, count and
 * version). Whatever changes which ids or sites sit where bumps the data's
 * version (enr_store__data_changed()); a put is folded in by
 * enr_store__index_put() instead of a rebuild.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/* Open addressing, at most half full; a slot holds position + 1 (0: empty). */
static uint64_t hash_text(uint64_t h, const char *s)
{
	for (; *s; s++) {
		h ^= (unsigned char)*s;
		h *= 1099511628211ULL; /* FNV-1a */
	}
	return h;
}

static uint64_t id_hash(const char *id)
{
	return hash_text(14695981039346656037ULL, id);
}

static uint64_t site_hash(const char *vendor, const char *site)
{
	return hash_text(hash_text(14695981039346656037ULL, vendor) ^ 0xff, site);
}

void enr_store__data_changed(struct store_data *d)
{
	static unsigned long long versions;

	/* Process-wide, so that data read afresh never passes for data indexed
	 * before, even where malloc hands out the same array again. */
	d->version = __atomic_add_fetch(&versions, 1, __ATOMIC_RELAXED);
}

void enr_store__index_free(struct store_index *ix)
{
	free(ix->ids);
	free(ix->sites);
	memset(ix, 0, sizeof(*ix));
}

static int grow(struct store_index *ix, size_t want)
{
	size_t cap = 64;

	while (cap < 2 * want + 2)
		cap *= 2;
	if (cap <= ix->cap)
		return 0;
	free(ix->ids);
	free(ix->sites);
	ix->ids = calloc(cap, sizeof(*ix->ids));
	ix->sites = calloc(cap, sizeof(*ix->sites));
	ix->cap = ix->ids && ix->sites ? cap : 0;
	if (!ix->cap) {
		enr_store__index_free(ix);
		return -1;
	}
	return 0;
}

static void insert(struct store_slot *table, size_t cap, uint64_t h, size_t pos)
{
	size_t i = (size_t)h & (cap - 1);

	while (table[i].pos)
		i = (i + 1) & (cap - 1);
	table[i].hash = h;
	table[i].pos = pos + 1;
}

static void add_record(struct store_index *ix, const struct enr_record *rec, size_t pos)
{
	insert(ix->ids, ix->cap, id_hash(rec->id), pos);
	for (size_t s = 0; s < rec->n_sites; s++)
		insert(ix->sites, ix->cap, site_hash(rec->vendor, rec->sites[s].id), pos);
	ix->entries += 1 + rec->n_sites;
}

static void aim(struct store_index *ix, const struct store_data *d)
{
	ix->records = d->records;
	ix->n = d->n_records;
	ix->version = d->version;
	ix->valid = true;
}

static int build(struct store_index *ix, const struct store_data *d)
{
	size_t want = 0;

	ix->valid = false;
	for (size_t i = 0; i < d->n_records; i++)
		want += 1 + d->records[i]->n_sites;
	if (grow(ix, want) < 0)
		return -1;
	memset(ix->ids, 0, ix->cap * sizeof(*ix->ids));
	memset(ix->sites, 0, ix->cap * sizeof(*ix->sites));
	ix->entries = 0;
	for (size_t i = 0; i < d->n_records; i++)
		add_record(ix, d->records[i], i);
	aim(ix, d);
	return 0;
}

/* Ready for `d`, built again if it is not the data it knows; -1 without memory. */
static int ready(struct store_index *ix, const struct store_data *d)
{
	if (ix->valid && ix->records == d->records && ix->n == d->n_records &&
	    ix->version == d->version)
		return 0;
	return build(ix, d);
}

int enr_store__index_build(struct store_index *ix, const struct store_data *d)
{
	return ready(ix, d);
}

/* A walk of d when there is no memory for the index. */
static ssize_t scan_id(const struct store_data *d, const char *id)
{
	for (size_t i = 0; i < d->n_records; i++)
		if (strcmp(d->records[i]->id, id) == 0)
			return (ssize_t)i;
	return -1;
}

ssize_t enr_store__index_id(struct store_index *ix, const struct store_data *d, const char *id)
{
	uint64_t h = id_hash(id);

	if (ready(ix, d) < 0)
		return scan_id(d, id);
	for (size_t i = (size_t)h & (ix->cap - 1); ix->ids[i].pos; i = (i + 1) & (ix->cap - 1)) {
		size_t pos = ix->ids[i].pos - 1;
		if (ix->ids[i].hash == h && pos < d->n_records &&
		    strcmp(d->records[pos]->id, id) == 0)
			return (ssize_t)pos;
	}
	return -1;
}

static bool holds(const struct enr_record *rec, const char *vendor, const char *site)
{
	if (strcmp(rec->vendor, vendor) != 0)
		return false;
	for (size_t s = 0; s < rec->n_sites; s++)
		if (strcmp(rec->sites[s].id, site) == 0)
			return true;
	return false;
}

size_t enr_store__index_sites(struct store_index *ix, const struct store_data *d,
                              const char *vendor, const char *site, size_t *out, size_t max)
{
	uint64_t h = site_hash(vendor, site);
	size_t n = 0;

	if (ready(ix, d) < 0) {
		for (size_t i = 0; i < d->n_records && n < max; i++)
			if (holds(d->records[i], vendor, site))
				out[n++] = i;
		return n;
	}
	for (size_t i = (size_t)h & (ix->cap - 1); ix->sites[i].pos && n < max;
	     i = (i + 1) & (ix->cap - 1)) {
		size_t pos = ix->sites[i].pos - 1;
		bool seen = false;
		if (ix->sites[i].hash != h || pos >= d->n_records ||
		    !holds(d->records[pos], vendor, site))
			continue;
		for (size_t k = 0; k < n && !seen; k++)
			seen = out[k] == pos;
		if (!seen)
			out[n++] = pos;
	}
	/* In the order of the records, as a walk would find them. */
	for (size_t a = 1; a < n; a++)
		for (size_t b = a; b > 0 && out[b - 1] > out[b]; b--) {
			size_t t = out[b];
			out[b] = out[b - 1];
			out[b - 1] = t;
		}
	return n;
}

void enr_store__index_put(struct store_index *ix, const struct store_data *before,
                          const struct store_data *after, size_t pos)
{
	const struct enr_record *rec = after->records[pos];

	/* Only a put into the data the index knows: a replacement in place, or
	 * one record appended. A replaced record's old entries stay: each hit is
	 * checked against the record at its position, so they only miss. */
	if (!ix->valid || ix->records != before->records || ix->n != before->n_records ||
	    ix->version != before->version ||
	    !(pos < before->n_records
	          ? after->n_records == before->n_records
	          : pos == before->n_records && after->n_records == before->n_records + 1)) {
		ix->valid = false;
		return;
	}
	if (2 * (ix->entries + 1 + rec->n_sites) + 2 > ix->cap) {
		ix->valid = false; /* rebuilt, larger, when next asked */
		return;
	}
	add_record(ix, rec, pos);
	aim(ix, after);
}
