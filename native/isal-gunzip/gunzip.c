/*
 * Streaming gzip decompression with ISA-L's igzip (Debian libisal), as a Node-API addon.
 *
 * Why: inflating gzip layers with Node's zlib was the largest single cost of a conversion; igzip
 * inflates the same streams in about half the CPU time. The call is synchronous: it runs on the
 * conversion's decompressing worker thread, which has nothing else to do, and writes straight into
 * the caller's output buffer (no copy, no per-piece allocation).
 *
 * One gzip member at a time: ISA-L parses the member's header and checks its CRC-32 and length.
 * What follows a member (another member, zero padding, garbage) is the caller's decision.
 */
#include <isa-l/igzip_lib.h>
#include <node_api.h>
#include <stdlib.h>
#include <string.h>

#define CHECK(call)                                                                                \
  do {                                                                                             \
    if ((call) != napi_ok) {                                                                       \
      napi_throw_error(env, NULL, "isal-gunzip: Node-API call failed: " #call);                    \
      return NULL;                                                                                 \
    }                                                                                              \
  } while (0)

static void free_state(napi_env env, void *data, void *hint) {
  (void)env;
  (void)hint;
  free(data);
}

static void start_member(struct inflate_state *state) {
  isal_inflate_init(state);
  state->crc_flag = ISAL_GZIP;
}

/* create(): a new decompression state, ready for the first member. */
static napi_value create(napi_env env, napi_callback_info info) {
  (void)info;
  struct inflate_state *state = malloc(sizeof *state);
  if (state == NULL) {
    napi_throw_error(env, NULL, "isal-gunzip: out of memory");
    return NULL;
  }
  start_member(state);
  napi_value handle;
  if (napi_create_external(env, state, free_state, NULL, &handle) != napi_ok) {
    free(state);
    napi_throw_error(env, NULL, "isal-gunzip: Node-API call failed: napi_create_external");
    return NULL;
  }
  return handle;
}

static struct inflate_state *state_of(napi_env env, napi_value handle) {
  void *data = NULL;
  if (napi_get_value_external(env, handle, &data) != napi_ok || data == NULL) {
    napi_throw_type_error(env, NULL, "isal-gunzip: not a decompression state");
    return NULL;
  }
  return data;
}

/* reset(state): ready for the next member. */
static napi_value reset(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  struct inflate_state *state = state_of(env, argv[0]);
  if (state == NULL) return NULL;
  start_member(state);
  return NULL;
}

static const char *problem_of(int code) {
  switch (code) {
  case ISAL_INVALID_BLOCK: return "invalid deflate block";
  case ISAL_INVALID_SYMBOL: return "invalid deflate symbol";
  case ISAL_INVALID_LOOKBACK: return "invalid back-reference distance";
  case ISAL_INVALID_WRAPPER: return "incorrect gzip header";
  case ISAL_UNSUPPORTED_METHOD: return "unsupported compression method in gzip header";
  case ISAL_INCORRECT_CHECKSUM: return "incorrect check value (data CRC-32, length or header CRC)";
  case ISAL_NEED_DICT: return "stream needs a preset dictionary";
  default: return "corrupt stream";
  }
}

static int typed_array_bytes(napi_env env, napi_value value, uint8_t **bytes, size_t *length) {
  napi_typedarray_type type;
  void *data;
  size_t count;
  if (napi_get_typedarray_info(env, value, &type, &count, &data, NULL, NULL) != napi_ok || type != napi_uint8_array)
    return 0;
  *bytes = data;
  *length = count;
  return 1;
}

/*
 * inflate(state, input, output, outputOffset, result): decompresses from input into
 * output[outputOffset..] until the input is used up, the output is full or the member ends.
 * result (a Uint32Array of 3) receives: input bytes consumed, output bytes produced, 1 when the
 * member ended (its checksum and length verified). Throws an Error with code ERR_GZIP_STREAM on
 * corrupt input.
 */
static napi_value inflate(napi_env env, napi_callback_info info) {
  size_t argc = 5;
  napi_value argv[5];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 5) {
    napi_throw_type_error(env, NULL, "isal-gunzip: inflate(state, input, output, outputOffset, result)");
    return NULL;
  }
  struct inflate_state *state = state_of(env, argv[0]);
  if (state == NULL) return NULL;
  uint8_t *input, *output;
  size_t input_length, output_length, result_length;
  uint32_t offset;
  if (!typed_array_bytes(env, argv[1], &input, &input_length) || !typed_array_bytes(env, argv[2], &output, &output_length) ||
      napi_get_value_uint32(env, argv[3], &offset) != napi_ok || offset > output_length || input_length > UINT32_MAX ||
      output_length - offset > UINT32_MAX) {
    napi_throw_type_error(env, NULL, "isal-gunzip: inflate expects Uint8Arrays and an offset within the output");
    return NULL;
  }
  napi_typedarray_type result_type;
  void *result_data;
  if (napi_get_typedarray_info(env, argv[4], &result_type, &result_length, &result_data, NULL, NULL) != napi_ok ||
      result_type != napi_uint32_array || result_length < 3) {
    napi_throw_type_error(env, NULL, "isal-gunzip: inflate expects a Uint32Array(3) for its result");
    return NULL;
  }
  uint32_t *result = result_data;
  state->next_in = input;
  state->avail_in = (uint32_t)input_length;
  state->next_out = output + offset;
  state->avail_out = (uint32_t)(output_length - offset);
  uint32_t room = state->avail_out;
  int code = isal_inflate(state);
  result[0] = (uint32_t)input_length - state->avail_in;
  result[1] = room - state->avail_out;
  result[2] = state->block_state == ISAL_BLOCK_FINISH ? 1 : 0;
  if (code < 0) {
    napi_value message, error, error_code;
    CHECK(napi_create_string_utf8(env, problem_of(code), NAPI_AUTO_LENGTH, &message));
    CHECK(napi_create_string_utf8(env, "ERR_GZIP_STREAM", NAPI_AUTO_LENGTH, &error_code));
    CHECK(napi_create_error(env, error_code, message, &error));
    CHECK(napi_throw(env, error));
    return NULL;
  }
  return NULL;
}

static napi_value init(napi_env env, napi_value exports) {
  napi_property_descriptor properties[] = {
      {"create", NULL, create, NULL, NULL, NULL, napi_default, NULL},
      {"reset", NULL, reset, NULL, NULL, NULL, napi_default, NULL},
      {"inflate", NULL, inflate, NULL, NULL, NULL, napi_default, NULL},
  };
  CHECK(napi_define_properties(env, exports, sizeof properties / sizeof properties[0], properties));
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
