/*
 * test_sha256.c — common/cxr_sha256.c against the FIPS 180-4 example
 * vectors (NIST CSRC "SHA256.pdf", and the million-'a' message of FIPS
 * 180-2 appendix B.3), on both compression functions (SHA extensions where
 * the CPU has them, portable), and in pieces of every split against one call.
 */
#include "cxr_sha256.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"

static void hex_of(const void *p, size_t n, char hex[65]) { cxr_sha256_hex(p, n, hex); }

int main(void) {
    static const struct { const char *msg, *hex; } fips[] = {
        {"abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"},
        {"", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"},
        {"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
         "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"},
        {"abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmnoijklmnopjklmnopqklmnopqrlmnopqrsmnopqrst"
         "nopqrstu",
         "cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1"},
    };
    const size_t MILLION = 1000000;
    char *a = malloc(MILLION);
    unsigned char *r = malloc(4096);
    if (!a || !r) return 1;
    memset(a, 'a', MILLION);
    for (int i = 0; i < 4096; i++) r[i] = (unsigned char)(i * 2654435761u >> 13);
    for (int portable = 0; portable < 2; portable++) {
        cxr_sha256_set_portable(portable);
        char hex[65];
        for (size_t i = 0; i < sizeof fips / sizeof fips[0]; i++) {
            hex_of(fips[i].msg, strlen(fips[i].msg), hex);
            CHECK(!strcmp(hex, fips[i].hex), "portable=%d FIPS vector %zu: %s, expected %s", portable, i, hex,
                  fips[i].hex);
        }
        hex_of(a, MILLION, hex);
        CHECK(!strcmp(hex, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0"),
              "portable=%d one million 'a': %s", portable, hex);
        /* every length 0..200 and splits around the 64-byte block and the 56-byte padding edge */
        for (size_t n = 0; n <= 200; n++) {
            char one[65], two[65];
            hex_of(r, n, one);
            for (size_t cut = 0; cut <= n; cut += (n > 20 ? 7 : 1)) {
                cxr_sha256_ctx c;
                unsigned char md[32];
                cxr_sha256_init(&c);
                cxr_sha256_update(&c, r, cut);
                cxr_sha256_update(&c, r + cut, n - cut);
                cxr_sha256_final(&c, md);
                for (int i = 0; i < 32; i++) snprintf(two + 2 * i, 3, "%02x", md[i]);
                if (strcmp(one, two)) {
                    CHECK(0, "portable=%d length %zu cut at %zu: %s vs %s", portable, n, cut, two, one);
                    break;
                }
            }
        }
    }
    /* the two compression functions agree on a long message */
    char fast[65], slow[65];
    cxr_sha256_set_portable(0);
    hex_of(r, 4096, fast);
    cxr_sha256_set_portable(1);
    hex_of(r, 4096, slow);
    CHECK(!strcmp(fast, slow), "SHA extensions %s vs portable %s", fast, slow);
    free(a);
    free(r);
    return CHECK_SUMMARY();
}
