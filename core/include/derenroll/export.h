#ifndef DERENROLL_EXPORT_H
#define DERENROLL_EXPORT_H

/* Marks the public API of libderenroll; everything else is hidden. */
#if defined(__GNUC__) && __GNUC__ >= 4
#define ENR_API __attribute__((visibility("default")))
#else
#define ENR_API
#endif

#if defined(__GNUC__)
#define ENR_PRINTF(fmt, args) __attribute__((format(printf, fmt, args)))
#else
#define ENR_PRINTF(fmt, args)
#endif

#endif
