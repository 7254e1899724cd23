/* The four memory functions GCC may emit calls to even in freestanding code
 * (struct copies, zeroing loops). Compiled with -fno-tree-loop-distribute-patterns
 * so that these loops are not themselves turned into calls to memset/memcpy. */
#include <stddef.h>
#include <stdint.h>

void *memset(void *dest, int value, size_t n)
{
    unsigned char *d = (unsigned char *)dest;
    while (n--) {
        *d++ = (unsigned char)value;
    }
    return dest;
}

void *memcpy(void *dest, const void *src, size_t n)
{
    unsigned char *d = (unsigned char *)dest;
    const unsigned char *s = (const unsigned char *)src;
    while (n--) {
        *d++ = *s++;
    }
    return dest;
}

void *memmove(void *dest, const void *src, size_t n)
{
    unsigned char *d = (unsigned char *)dest;
    const unsigned char *s = (const unsigned char *)src;
    if (d < s) {
        while (n--) {
            *d++ = *s++;
        }
    } else {
        d += n;
        s += n;
        while (n--) {
            *--d = *--s;
        }
    }
    return dest;
}

int memcmp(const void *a, const void *b, size_t n)
{
    const unsigned char *p = (const unsigned char *)a;
    const unsigned char *q = (const unsigned char *)b;
    for (; n; --n, ++p, ++q) {
        if (*p != *q) {
            return (int)*p - (int)*q;
        }
    }
    return 0;
}
