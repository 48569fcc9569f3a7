/*
 * SHA-256 with the x86 SHA extensions, able to run two digests over the same bytes in one pass, as a
 * Node-API addon.
 *
 * Why: the chunk thread hashes each new chunk twice, into its file's content digest (fingerprint and
 * object name) and into its blob's digest (the blob's name), and those two SHA-256 passes were half of
 * that thread's CPU time (perf; BENCHMARKS.md). A SHA-NI round instruction waits for the one before it
 * in the same digest, so one digest leaves the core idle between rounds; the rounds of a second digest
 * fill those gaps, and the two digests share the message schedule, since they read the same bytes.
 * Two digests of a buffer then cost about what one costs through OpenSSL.
 *
 * The digest state lives in a 112-byte buffer the caller owns (see index.d.ts), so nothing here is
 * allocated per file. Without the SHA extensions `available` is false and the caller uses node:crypto.
 */
#include <cpuid.h>
#include <immintrin.h>
#include <node_api.h>
#include <stdint.h>
#include <string.h>

/* State layout: h[8] (host order), total length in bytes, bytes waiting in `block`, the partial block. */
struct sha256_state {
  uint32_t h[8];
  uint64_t total;
  uint32_t buffered;
  uint32_t unused;
  uint8_t block[64];
};
_Static_assert(sizeof(struct sha256_state) == 112, "state layout");

static const uint32_t INITIAL[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};

/* The 64 round constants (FIPS 180-4, 4.2.2), four per group of rounds. */
static const uint32_t ROUND_CONSTANTS[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be,
    0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa,
    0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85,
    0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3,
    0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f,
    0x682e6ff3, 0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2};

#define SHA_TARGET __attribute__((target("sha,sse4.1,ssse3")))

/* The round instructions keep the state as two registers, (a, b, e, f) and (c, d, g, h). */
SHA_TARGET static inline void load_state(const uint32_t *h, __m128i *abef, __m128i *cdgh) {
  __m128i badc = _mm_shuffle_epi32(_mm_loadu_si128((const __m128i *)h), 0xB1);
  __m128i hgfe = _mm_shuffle_epi32(_mm_loadu_si128((const __m128i *)(h + 4)), 0x1B);
  *abef = _mm_alignr_epi8(badc, hgfe, 8);
  *cdgh = _mm_blend_epi16(hgfe, badc, 0xF0);
}

SHA_TARGET static inline void store_state(uint32_t *h, __m128i abef, __m128i cdgh) {
  __m128i feba = _mm_shuffle_epi32(abef, 0x1B);
  __m128i dchg = _mm_shuffle_epi32(cdgh, 0xB1);
  _mm_storeu_si128((__m128i *)h, _mm_blend_epi16(feba, dchg, 0xF0));
  _mm_storeu_si128((__m128i *)(h + 4), _mm_alignr_epi8(dchg, feba, 8));
}

/*
 * Runs `lanes` (1 or 2) digests over `count` 64-byte blocks at `bytes`. The message schedule is
 * computed once per block, and the lanes' rounds interleave.
 */
SHA_TARGET static void compress(uint32_t *h0, uint32_t *h1, int lanes, const uint8_t *bytes, size_t count) {
  const __m128i byteswap = _mm_set_epi64x(0x0c0d0e0f08090a0bULL, 0x0405060700010203ULL);
  __m128i abef0, cdgh0, abef1 = _mm_setzero_si128(), cdgh1 = _mm_setzero_si128();
  load_state(h0, &abef0, &cdgh0);
  if (lanes == 2) load_state(h1, &abef1, &cdgh1);
  for (; count > 0; count--, bytes += 64) {
    const __m128i saved_abef0 = abef0, saved_cdgh0 = cdgh0, saved_abef1 = abef1, saved_cdgh1 = cdgh1;
    /* The last 16 schedule words, four to a register, w[g % 4] holding words 4g .. 4g + 3. */
    __m128i w[4];
    for (int i = 0; i < 4; i++) w[i] = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(bytes + 16 * i)), byteswap);
    for (int group = 0; group < 16; group++) {
      if (group >= 4) {
        __m128i next = _mm_sha256msg1_epu32(w[group & 3], w[(group + 1) & 3]);
        next = _mm_add_epi32(next, _mm_alignr_epi8(w[(group + 3) & 3], w[(group + 2) & 3], 4));
        w[group & 3] = _mm_sha256msg2_epu32(next, w[(group + 3) & 3]);
      }
      const __m128i low = _mm_add_epi32(w[group & 3], _mm_loadu_si128((const __m128i *)(ROUND_CONSTANTS + 4 * group)));
      const __m128i high = _mm_shuffle_epi32(low, 0x0E);
      cdgh0 = _mm_sha256rnds2_epu32(cdgh0, abef0, low);
      if (lanes == 2) cdgh1 = _mm_sha256rnds2_epu32(cdgh1, abef1, low);
      abef0 = _mm_sha256rnds2_epu32(abef0, cdgh0, high);
      if (lanes == 2) abef1 = _mm_sha256rnds2_epu32(abef1, cdgh1, high);
    }
    abef0 = _mm_add_epi32(abef0, saved_abef0);
    cdgh0 = _mm_add_epi32(cdgh0, saved_cdgh0);
    abef1 = _mm_add_epi32(abef1, saved_abef1);
    cdgh1 = _mm_add_epi32(cdgh1, saved_cdgh1);
  }
  store_state(h0, abef0, cdgh0);
  if (lanes == 2) store_state(h1, abef1, cdgh1);
}

/* One lane and two lanes as their own functions, so the compiler unrolls each without the lane test. */
static void compress1(uint32_t *h, const uint8_t *bytes, size_t count) { compress(h, NULL, 1, bytes, count); }
static void compress2(uint32_t *h0, uint32_t *h1, const uint8_t *bytes, size_t count) { compress(h0, h1, 2, bytes, count); }

static void update(struct sha256_state *s, const uint8_t *bytes, size_t length) {
  s->total += length;
  if (s->buffered > 0) {
    size_t take = 64 - s->buffered < length ? 64 - s->buffered : length;
    memcpy(s->block + s->buffered, bytes, take);
    s->buffered += take;
    bytes += take;
    length -= take;
    if (s->buffered < 64) return;
    compress1(s->h, s->block, 1);
    s->buffered = 0;
  }
  if (length >= 64) compress1(s->h, bytes, length / 64);
  bytes += length - length % 64;
  length %= 64;
  memcpy(s->block, bytes, length);
  s->buffered = length;
}

/* The same bytes into two digests: in one pass when both are at a block boundary (the usual case). */
static void update_pair(struct sha256_state *a, struct sha256_state *b, const uint8_t *bytes, size_t length) {
  if (a->buffered != 0 || b->buffered != 0 || a == b) {
    update(a, bytes, length);
    update(b, bytes, length);
    return;
  }
  a->total += length;
  b->total += length;
  if (length >= 64) compress2(a->h, b->h, bytes, length / 64);
  size_t rest = length % 64;
  memcpy(a->block, bytes + length - rest, rest);
  memcpy(b->block, bytes + length - rest, rest);
  a->buffered = b->buffered = rest;
}

static void finish(struct sha256_state *s, uint8_t *digest) {
  uint64_t bits = s->total * 8;
  uint8_t tail[72] = {0x80};
  size_t pad = (s->buffered < 56 ? 56 : 120) - s->buffered;
  for (int i = 0; i < 8; i++) tail[pad + i] = (uint8_t)(bits >> (56 - 8 * i));
  update(s, tail, pad + 8);
  for (int i = 0; i < 8; i++) {
    digest[4 * i] = (uint8_t)(s->h[i] >> 24);
    digest[4 * i + 1] = (uint8_t)(s->h[i] >> 16);
    digest[4 * i + 2] = (uint8_t)(s->h[i] >> 8);
    digest[4 * i + 3] = (uint8_t)s->h[i];
  }
}

static int cpu_has_sha_extensions(void) {
  unsigned eax, ebx, ecx, edx;
  if (!__get_cpuid(1, &eax, &ebx, &ecx, &edx)) return 0;
  int ssse3 = (ecx >> 9) & 1, sse41 = (ecx >> 19) & 1;
  if (!__get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx)) return 0;
  return ssse3 && sse41 && ((ebx >> 29) & 1);
}

/* ---- Node-API ---- */

#define CHECK(call)                                                                                \
  do {                                                                                             \
    if ((call) != napi_ok) {                                                                       \
      napi_throw_error(env, NULL, "sha256-pair: Node-API call failed: " #call);                    \
      return NULL;                                                                                 \
    }                                                                                              \
  } while (0)

static int available;

/* The bytes of a Uint8Array (or Buffer) argument; NULL with a TypeError thrown when it is not one, or is shorter than `least`. */
static uint8_t *bytes_of(napi_env env, napi_value value, size_t least, size_t *length, const char *what) {
  napi_typedarray_type type;
  size_t count;
  void *data;
  napi_value buffer;
  size_t offset;
  if (napi_get_typedarray_info(env, value, &type, &count, &data, &buffer, &offset) != napi_ok || type != napi_uint8_array || count < least) {
    napi_throw_type_error(env, NULL, what);
    return NULL;
  }
  if (length != NULL) *length = count;
  return count == 0 ? (uint8_t *)"" : data;
}

static struct sha256_state *state_of(napi_env env, napi_value value) {
  if (!available) {
    napi_throw_error(env, NULL, "sha256-pair: this CPU has no SHA extensions (check `available` first)");
    return NULL;
  }
  return (struct sha256_state *)bytes_of(env, value, sizeof(struct sha256_state), NULL, "sha256-pair: a state must be a Uint8Array of at least 112 bytes");
}

/*
 * The call's `count` arguments into `argv`, the first a state: that state, or NULL with an exception
 * pending (missing arguments read as undefined, which state_of and bytes_of refuse).
 */
static struct sha256_state *call_with_state(napi_env env, napi_callback_info info, size_t count, napi_value *argv) {
  size_t argc = count;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok) {
    napi_throw_error(env, NULL, "sha256-pair: Node-API call failed: napi_get_cb_info");
    return NULL;
  }
  return state_of(env, argv[0]);
}

/* init(state) */
static napi_value init(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  struct sha256_state *s = call_with_state(env, info, 1, argv);
  if (s == NULL) return NULL;
  memset(s, 0, sizeof *s);
  memcpy(s->h, INITIAL, sizeof INITIAL);
  return NULL;
}

/* update(state, bytes) */
static napi_value update_js(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  struct sha256_state *s = call_with_state(env, info, 2, argv);
  size_t length;
  uint8_t *bytes = s == NULL ? NULL : bytes_of(env, argv[1], 0, &length, "sha256-pair: bytes must be a Uint8Array");
  if (bytes != NULL) update(s, bytes, length);
  return NULL;
}

/* updatePair(stateA, stateB, bytes) */
static napi_value update_pair_js(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  struct sha256_state *a = call_with_state(env, info, 3, argv);
  struct sha256_state *b = a == NULL ? NULL : state_of(env, argv[1]);
  size_t length;
  uint8_t *bytes = b == NULL ? NULL : bytes_of(env, argv[2], 0, &length, "sha256-pair: bytes must be a Uint8Array");
  if (bytes != NULL) update_pair(a, b, bytes, length);
  return NULL;
}

/* digest(state, out) */
static napi_value digest_js(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  struct sha256_state *s = call_with_state(env, info, 2, argv);
  uint8_t *out = s == NULL ? NULL : bytes_of(env, argv[1], 32, NULL, "sha256-pair: the digest goes into a Uint8Array of at least 32 bytes");
  if (out != NULL) finish(s, out);
  return NULL;
}

NAPI_MODULE_INIT() {
  available = cpu_has_sha_extensions();
  napi_value value;
  CHECK(napi_get_boolean(env, available, &value));
  CHECK(napi_set_named_property(env, exports, "available", value));
  CHECK(napi_create_uint32(env, sizeof(struct sha256_state), &value));
  CHECK(napi_set_named_property(env, exports, "stateBytes", value));
  const struct {
    const char *name;
    napi_callback fn;
  } functions[] = {{"init", init}, {"update", update_js}, {"updatePair", update_pair_js}, {"digest", digest_js}};
  for (size_t i = 0; i < sizeof functions / sizeof functions[0]; i++) {
    CHECK(napi_create_function(env, functions[i].name, NAPI_AUTO_LENGTH, functions[i].fn, NULL, &value));
    CHECK(napi_set_named_property(env, exports, functions[i].name, value));
  }
  return exports;
}
