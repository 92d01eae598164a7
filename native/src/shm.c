/*
 * mapFile(path, bytes, mode): a file mapped into memory as an ArrayBuffer, for the regions a
 * coordinator shares with the workers on its host (shared/wire/same-host.ts).
 *
 * mode 0 creates the file: it must not exist (O_EXCL, no symlink followed), is made readable and
 * writable by its owner only (0600) and gets all of its `bytes` reserved at once, so a full
 * tmpfs fails here with ENOSPC instead of killing the process with SIGBUS on a later write.
 * mode 1 opens an existing file to read and write, mode 2 to read only (the mapping is read only
 * too: a write through it faults). An existing file must be exactly `bytes` long.
 *
 * The mapping lives as long as the ArrayBuffer; the file may be unlinked at any time. Failures
 * throw an Error whose code is the errno name (EACCES, ENOENT, EEXIST, ENOSPC, ...) or E_NATIVE.
 */
#define _GNU_SOURCE
#include "shm.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "args.h"

static const char* errno_name(int e) {
  switch (e) {
    case EACCES: return "EACCES";
    case ENOENT: return "ENOENT";
    case EEXIST: return "EEXIST";
    case EPERM: return "EPERM";
    case ELOOP: return "ELOOP";
    case ENOSPC: return "ENOSPC";
    case ENOMEM: return "ENOMEM";
    case EINVAL: return "EINVAL";
    case ENOTDIR: return "ENOTDIR";
    case EMFILE: return "EMFILE";
    case ENFILE: return "ENFILE";
    case EROFS: return "EROFS";
    default: return "E_NATIVE";
  }
}

static napi_value fail_errno(napi_env env, const char* what, const char* path, int e) {
  char msg[4608];
  snprintf(msg, sizeof msg, "gan_native.mapFile: %s %s: %s", what, path, strerror(e));
  napi_throw_error(env, errno_name(e), msg);
  return NULL;
}

static void unmap(napi_env env, void* data, void* hint) {
  munmap(data, (size_t)(uintptr_t)hint);
}

napi_value shm_map_file(napi_env env, napi_callback_info info) {
  Args a;
  if (!args_init(&a, env, info, 3, "mapFile")) return NULL;
  char path[4096];
  size_t path_len = 0;
  napi_valuetype t;
  if (napi_typeof(env, a.argv[0], &t) != napi_ok || t != napi_string) {
    napi_throw_type_error(env, "E_NATIVE", "gan_native.mapFile: path must be a string");
    return NULL;
  }
  if (napi_get_value_string_utf8(env, a.argv[0], path, sizeof path, &path_len) != napi_ok) return napi_failed(env, "napi_get_value_string_utf8");
  if (path_len == 0 || path_len >= sizeof path - 1) return args_fail(&a, "path must be 1 to 4094 bytes");
  const int64_t bytes = arg_int(&a, 1, "bytes");
  const int64_t mode = arg_int(&a, 2, "mode");
  if (a.failed) return NULL;
  if (bytes < 1 || bytes > ((int64_t)1 << 40)) return args_fail(&a, "bytes must be from 1 to 2^40");
  if (mode < 0 || mode > 2) return args_fail(&a, "mode must be 0 (create), 1 (read and write) or 2 (read only)");

  const int flags = (mode == 0 ? O_RDWR | O_CREAT | O_EXCL : mode == 1 ? O_RDWR : O_RDONLY) | O_NOFOLLOW | O_CLOEXEC;
  const int fd = open(path, flags, 0600);
  if (fd < 0) return fail_errno(env, "open", path, errno);
  if (mode == 0) {
    const int e = posix_fallocate(fd, 0, (off_t)bytes);
    if (e != 0) {
      close(fd);
      unlink(path);
      return fail_errno(env, "reserve", path, e);
    }
  } else {
    struct stat st;
    if (fstat(fd, &st) != 0) {
      const int e = errno;
      close(fd);
      return fail_errno(env, "stat", path, e);
    }
    if (!S_ISREG(st.st_mode) || st.st_size != (off_t)bytes) {
      close(fd);
      char msg[4608];
      snprintf(msg, sizeof msg, "gan_native.mapFile: %s is %lld bytes, expected %lld", path, (long long)st.st_size, (long long)bytes);
      napi_throw_error(env, "E_SIZE", msg);
      return NULL;
    }
  }
  void* p = mmap(NULL, (size_t)bytes, mode == 2 ? PROT_READ : PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  const int e = errno;
  close(fd);
  if (p == MAP_FAILED) {
    if (mode == 0) unlink(path);
    return fail_errno(env, "mmap", path, e);
  }
  napi_value out;
  if (napi_create_external_arraybuffer(env, p, (size_t)bytes, unmap, (void*)(uintptr_t)bytes, &out) != napi_ok) {
    munmap(p, (size_t)bytes);
    return napi_failed(env, "napi_create_external_arraybuffer");
  }
  return out;
}
