#ifndef DERENROLL_CONFIG_INTERNAL_H
#define DERENROLL_CONFIG_INTERNAL_H

#include <stddef.h>

/*
 * The i-th key config.c knows: 0 and its section ("vendor.<id>" for the vendor
 * sections) and key, ENR_E_NOTFOUND past the end. For the test that holds
 * derenroll.ini(5) to the code.
 */
int enr_config__known_key(size_t i, const char **section, const char **key);

#endif
