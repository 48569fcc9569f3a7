/*
 * Sequential file writes with O_DIRECT, done by a background thread, as a Node-API addon.
 *
 * Why: a build writes its blob once, front to back, and fsyncs it before naming it. Through the
 * page cache every byte was first copied into newly allocated cache pages: on the machine we measure
 * on, 1.6 of the chunk thread's 3.8 CPU-seconds on an 876 MB layer (perf; BENCHMARKS.md), more than
 * its hashing. And the data had to be written back anyway. With O_DIRECT the disk reads the bytes
 * from our buffers. Direct writes block until the device has them, so a thread of ours does them
 * while the build goes on: the caller's submit only copies into a free aligned slot, and waits only
 * when the disk is behind.
 *
 * Where the file system refuses O_DIRECT (ramfs, or an alignment it does not accept), writes go
 * through the page cache instead, with the same results.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <node_api.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Memory address, length and file offset of direct writes: the largest logical block size in common use. */
#define ALIGNMENT 4096
#define MAX_SLOTS 16

struct writer {
  int fd;
  int direct;
  size_t slot_bytes;
  int slot_count;
  uint8_t *slots[MAX_SLOTS];
  size_t lengths[MAX_SLOTS];
  off_t positions[MAX_SLOTS];
  /* Queued slots are head .. head + queued - 1 (mod slot_count), written in that order. */
  int head;
  int queued;
  /* errno of the first failed write; later writes are skipped. */
  int error;
  int stopping;
  int running;
  pthread_t thread;
  pthread_mutex_t lock;
  pthread_cond_t changed;
};

#define CHECK(call)                                                                                \
  do {                                                                                             \
    if ((call) != napi_ok) {                                                                       \
      napi_throw_error(env, NULL, "direct-write: Node-API call failed: " #call);                   \
      return NULL;                                                                                 \
    }                                                                                              \
  } while (0)

static int set_direct(int fd, int on) {
  int flags = fcntl(fd, F_GETFL);
  if (flags < 0) return -1;
  return fcntl(fd, F_SETFL, on ? flags | O_DIRECT : flags & ~O_DIRECT);
}

/* Writes all of one slot; 0 or an errno. Falls back to the page cache if a direct write is refused. */
static int write_slot(struct writer *w, const uint8_t *bytes, size_t length, off_t position) {
  size_t done = 0;
  while (done < length) {
    ssize_t n = pwrite(w->fd, bytes + done, length - done, position + (off_t)done);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EINVAL && w->direct) {
        if (set_direct(w->fd, 0) != 0) return errno;
        w->direct = 0;
        continue;
      }
      return errno;
    }
    if (n == 0) return EIO;
    done += (size_t)n;
  }
  return 0;
}

static void *write_loop(void *data) {
  struct writer *w = data;
  pthread_mutex_lock(&w->lock);
  for (;;) {
    while (w->queued == 0 && !w->stopping) pthread_cond_wait(&w->changed, &w->lock);
    if (w->queued == 0) break;
    int slot = w->head;
    int failed = w->error;
    pthread_mutex_unlock(&w->lock);
    int error = failed ? 0 : write_slot(w, w->slots[slot], w->lengths[slot], w->positions[slot]);
    pthread_mutex_lock(&w->lock);
    if (error != 0 && w->error == 0) w->error = error;
    w->head = (w->head + 1) % w->slot_count;
    w->queued--;
    pthread_cond_broadcast(&w->changed);
  }
  pthread_mutex_unlock(&w->lock);
  return NULL;
}

/* Stops and joins the thread, frees the slots. Safe to call twice. */
static void stop_writer(struct writer *w) {
  if (w->running) {
    pthread_mutex_lock(&w->lock);
    w->stopping = 1;
    pthread_cond_broadcast(&w->changed);
    pthread_mutex_unlock(&w->lock);
    pthread_join(w->thread, NULL);
    w->running = 0;
  }
  for (int i = 0; i < w->slot_count; i++) {
    free(w->slots[i]);
    w->slots[i] = NULL;
  }
}

static void finalize_writer(napi_env env, void *data, void *hint) {
  (void)env;
  (void)hint;
  struct writer *w = data;
  stop_writer(w);
  pthread_mutex_destroy(&w->lock);
  pthread_cond_destroy(&w->changed);
  free(w);
}

static struct writer *writer_of(napi_env env, napi_value handle) {
  void *data = NULL;
  if (napi_get_value_external(env, handle, &data) != napi_ok || data == NULL) {
    napi_throw_type_error(env, NULL, "direct-write: not a writer");
    return NULL;
  }
  return data;
}

static void throw_errno(napi_env env, int error, const char *what) {
  char text[256];
  snprintf(text, sizeof text, "%s: %s", what, strerror(error));
  napi_value message, code, value;
  /* The errno's name (ENOSPC...), as Node's fs errors carry it in `code`. */
  const char *name = strerrorname_np(error);
  if (name == NULL) name = "EIO";
  if (napi_create_string_utf8(env, text, NAPI_AUTO_LENGTH, &message) != napi_ok ||
      napi_create_string_utf8(env, name, NAPI_AUTO_LENGTH, &code) != napi_ok || napi_create_error(env, code, message, &value) != napi_ok) {
    napi_throw_error(env, NULL, text);
    return;
  }
  napi_value errno_value;
  if (napi_create_int32(env, -error, &errno_value) == napi_ok) napi_set_named_property(env, value, "errno", errno_value);
  napi_throw(env, value);
}

/* open(fd, slotBytes, slots) -> { writer, direct } */
static napi_value open_writer(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  int32_t fd, slots;
  uint32_t slot_bytes;
  if (argc < 3 || napi_get_value_int32(env, argv[0], &fd) != napi_ok || napi_get_value_uint32(env, argv[1], &slot_bytes) != napi_ok ||
      napi_get_value_int32(env, argv[2], &slots) != napi_ok || fd < 0 || slot_bytes == 0 || slot_bytes % ALIGNMENT != 0 || slots < 1 ||
      slots > MAX_SLOTS) {
    napi_throw_type_error(env, NULL, "direct-write: open(fd, slotBytes (a multiple of 4096), slots (1-16))");
    return NULL;
  }
  struct writer *w = calloc(1, sizeof *w);
  if (w == NULL) {
    napi_throw_error(env, NULL, "direct-write: out of memory");
    return NULL;
  }
  w->fd = fd;
  w->slot_bytes = slot_bytes;
  w->slot_count = slots;
  pthread_mutex_init(&w->lock, NULL);
  pthread_cond_init(&w->changed, NULL);
  for (int i = 0; i < slots; i++) {
    if (posix_memalign((void **)&w->slots[i], ALIGNMENT, slot_bytes) != 0) {
      finalize_writer(env, w, NULL);
      napi_throw_error(env, NULL, "direct-write: out of memory");
      return NULL;
    }
  }
  w->direct = set_direct(fd, 1) == 0;
  if (pthread_create(&w->thread, NULL, write_loop, w) != 0) {
    finalize_writer(env, w, NULL);
    napi_throw_error(env, NULL, "direct-write: cannot start the writing thread");
    return NULL;
  }
  w->running = 1;
  napi_value handle, result, direct;
  if (napi_create_external(env, w, finalize_writer, NULL, &handle) != napi_ok) {
    finalize_writer(env, w, NULL);
    napi_throw_error(env, NULL, "direct-write: Node-API call failed: napi_create_external");
    return NULL;
  }
  CHECK(napi_create_object(env, &result));
  CHECK(napi_get_boolean(env, w->direct, &direct));
  CHECK(napi_set_named_property(env, result, "writer", handle));
  CHECK(napi_set_named_property(env, result, "direct", direct));
  return result;
}

/* submit(writer, bytes, positionBytes) */
static napi_value submit(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  struct writer *w = argc < 3 ? NULL : writer_of(env, argv[0]);
  if (w == NULL) return NULL;
  napi_typedarray_type type;
  size_t length;
  void *bytes;
  double position;
  if (napi_get_typedarray_info(env, argv[1], &type, &length, &bytes, NULL, NULL) != napi_ok || type != napi_uint8_array ||
      napi_get_value_double(env, argv[2], &position) != napi_ok || position < 0 || position > 9007199254740991.0 ||
      (uint64_t)position % ALIGNMENT != 0 || length % ALIGNMENT != 0 || length > w->slot_bytes || !w->running) {
    napi_throw_type_error(env, NULL, "direct-write: submit(writer, bytes (a multiple of 4096, at most a slot), position (a multiple of 4096)) on an open writer");
    return NULL;
  }
  if (length == 0) return NULL;
  pthread_mutex_lock(&w->lock);
  while (w->queued == w->slot_count && w->error == 0) pthread_cond_wait(&w->changed, &w->lock);
  int error = w->error;
  int slot = (w->head + w->queued) % w->slot_count;
  pthread_mutex_unlock(&w->lock);
  if (error != 0) {
    throw_errno(env, error, "write failed");
    return NULL;
  }
  /* The thread only reads queued slots: this one is ours until it is queued. */
  memcpy(w->slots[slot], bytes, length);
  w->lengths[slot] = length;
  w->positions[slot] = (off_t)position;
  pthread_mutex_lock(&w->lock);
  w->queued++;
  pthread_cond_broadcast(&w->changed);
  pthread_mutex_unlock(&w->lock);
  return NULL;
}

/* drain(writer, buffered) */
static napi_value drain(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  struct writer *w = argc < 2 ? NULL : writer_of(env, argv[0]);
  if (w == NULL) return NULL;
  bool buffered = false;
  CHECK(napi_get_value_bool(env, argv[1], &buffered));
  pthread_mutex_lock(&w->lock);
  while (w->queued > 0) pthread_cond_wait(&w->changed, &w->lock);
  int error = w->error;
  pthread_mutex_unlock(&w->lock);
  if (buffered && w->direct) {
    if (set_direct(w->fd, 0) == 0)
      w->direct = 0;
    else if (error == 0)
      error = errno;
  }
  if (error != 0) throw_errno(env, error, "write failed");
  return NULL;
}

/* close(writer) */
static napi_value close_writer(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  struct writer *w = argc < 1 ? NULL : writer_of(env, argv[0]);
  if (w == NULL) return NULL;
  stop_writer(w);
  return NULL;
}

static napi_value init(napi_env env, napi_value exports) {
  napi_property_descriptor properties[] = {
      {"open", NULL, open_writer, NULL, NULL, NULL, napi_default, NULL},
      {"submit", NULL, submit, NULL, NULL, NULL, napi_default, NULL},
      {"drain", NULL, drain, NULL, NULL, NULL, napi_default, NULL},
      {"close", NULL, close_writer, NULL, NULL, NULL, napi_default, NULL},
  };
  CHECK(napi_define_properties(env, exports, sizeof properties / sizeof properties[0], properties));
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
