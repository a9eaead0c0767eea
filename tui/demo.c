/* --demo: the in-process sandbox every vendor, Derapi and the relay point at. */
#include <stddef.h>

#include "derenroll/config.h"
#include "derenroll/sandbox.h"
#include "cli.h"

int cli_demo_sandbox(struct cli_globals *g, struct enr_sandbox **out)
{
	struct enr_sandbox_options so = {0};
	struct enr_config *scfg = NULL;
	const char *section, *key, *value;
	int rc;

	*out = NULL;
	rc = cli_load_config(g);
	so.catalog = g->catalog;
	/* The same world every time: records kept with --store stay valid (key methods). */
	so.seed = 0x64656d6f; /* "demo" */
	if (rc == 0)
		rc = enr_sandbox_start(out, &so);
	if (rc == 0)
		rc = enr_sandbox_config(&scfg, *out);
	/* The demo's vendors, Derapi and relay win over the user's configuration. */
	for (size_t i = 0; rc == 0 && enr_config_entry(scfg, i, &section, &key, &value) == 0; i++)
		rc = enr_config_set(g->cfg, section, key, value);
	enr_config_free(scfg);
	if (rc < 0) {
		enr_sandbox_stop(*out);
		*out = NULL;
	}
	return rc;
}
