#ifndef DERENROLL_TUI_MEM_H
#define DERENROLL_TUI_MEM_H

#include <stdlib.h>

#include "derenroll/error.h"

/*
 * Makes `*array` (of `*cap` elements of `elem` bytes) hold at least `need`,
 * doubling from `first`. Returns 0, or ENR_E_NOMEM with the array unchanged.
 */
static inline int tui_grow(void **array, size_t *cap, size_t need, size_t elem, size_t first)
{
	size_t new_cap = *cap ? *cap : first;
	void *bigger;

	if (need <= *cap)
		return 0;
	while (new_cap < need)
		new_cap *= 2;
	bigger = realloc(*array, new_cap * elem);
	if (!bigger)
		return enr_error_set(ENR_E_NOMEM, NULL);
	*array = bigger;
	*cap = new_cap;
	return 0;
}

#endif
