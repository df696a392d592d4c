// EmbeddedPaths: the files a program names in its own read-only data. Programs open fixed
// files at start that no dependency graph lists: glibc its configuration (/etc/nsswitch.conf,
// /etc/localtime, gconv-modules.cache), OpenSSL `<OPENSSLDIR>/openssl.cnf`, Node.js the
// JavaScript builtins a distribution keeps outside the binary
// (/usr/share/nodejs/acorn/dist/acorn.js). Their paths are C string literals in the object's
// read-only data, so a startup prefetch that has the object's bytes can name them before the
// program asks.
//
// Pure and bounded: the data is untrusted (an image's file); the result holds at most
// `max_paths` candidates of at most `max_length` bytes. Nothing here checks that a candidate
// exists: the caller resolves them in the image.
#ifndef LAZYPULL_FETCHER_ELF_EMBEDDED_PATHS_H_
#define LAZYPULL_FETCHER_ELF_EMBEDDED_PATHS_H_

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

namespace lazypull::elf {

struct EmbeddedPathOptions {
  size_t max_paths = 512;
  size_t min_length = 6;    // "/a/bc": shorter strings are mostly not paths
  size_t max_length = 255;  // one path component's limit: longer strings are not paths
  // Bare configuration file names ("openssl.cnf") joined to the absolute paths found in the
  // same data (OPENSSLDIR "/usr/lib/ssl"): at most this many names.
  size_t max_config_names = 8;
};

// Candidate absolute paths in `data`, in order of first appearance, without duplicates:
//   * every NUL-terminated string that starts right after a NUL (or at the start of `data`)
//     and looks like an absolute path: '/', then components of [A-Za-z0-9._+@-], no empty,
//     "." or ".." component, no trailing '/', at least two components;
//   * then each bare NUL-terminated name ending in .cnf, .conf, .cfg or .ini joined to each
//     path found above (a directory, perhaps): "/usr/lib/ssl" + "openssl.cnf".
// Thread-safe (pure).
std::vector<std::string> EmbeddedPaths(std::string_view data,
                                       const EmbeddedPathOptions& options = {});

}  // namespace lazypull::elf

#endif  // LAZYPULL_FETCHER_ELF_EMBEDDED_PATHS_H_
