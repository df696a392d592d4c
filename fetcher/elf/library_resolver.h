// LibraryResolver: finds the file a DT_NEEDED name loads inside an image, in the order
// glibc's ld.so searches (elf/dl-load.c, _dl_map_object):
//   1. a name containing '/' is a path ($ORIGIN etc. expanded; relative to "/", the usual
//      working directory of a container's first process);
//   2. if the loading object has no DT_RUNPATH: the DT_RPATH of the loading object, then of
//      the object that loaded it, and so on up to the executable;
//   3. LD_LIBRARY_PATH: skipped (the environment is not known here);
//   4. the loading object's DT_RUNPATH;
//   5. unless the loading object has DF_1_NODEFLIB: /etc/ld.so.cache (LdSoCache, the entries
//      of this Abi), then the default directories (Abi::default_dirs).
// $ORIGIN, $LIB and $PLATFORM (also as ${...}) are expanded in RPATH/RUNPATH; an element
// whose token has no value, or that is relative (it would depend on the working directory),
// is skipped. Every candidate is followed through symlinks inside the image (ResolvePath)
// and must end at a regular file; a cache entry whose file is gone falls through to the
// default directories, as in ld.so.
//
// Not modeled: LD_LIBRARY_PATH/LD_PRELOAD, glibc-hwcaps and legacy hwcap subdirectories,
// secure-mode (setuid) restrictions, and already-loaded objects (WalkDependencies matches
// those by name and soname).
//
// Thread-safety: const methods are safe from any thread if the FileTree's are.
#ifndef LAZYPULL_FETCHER_ELF_LIBRARY_RESOLVER_H_
#define LAZYPULL_FETCHER_ELF_LIBRARY_RESOLVER_H_

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "fetcher/elf/abi.h"
#include "fetcher/elf/file_tree.h"
#include "fetcher/elf/ld_so_cache.h"

namespace lazypull::elf {

// What the search needs to know about one object of the loader chain.
struct LoaderObject {
  std::string origin;                  // $ORIGIN: the directory the object was loaded from
  std::optional<std::string> rpath;    // DT_RPATH (already absent if it has a DT_RUNPATH)
  std::optional<std::string> runpath;  // DT_RUNPATH
  bool nodeflib = false;               // DT_FLAGS_1 & DF_1_NODEFLIB
};

enum class LibrarySource { kPath, kRpath, kRunpath, kCache, kDefaultDir };
std::string_view LibrarySourceName(LibrarySource source);

struct ResolvedLibrary {
  std::string path;       // the name ld.so opens (search directory + name): gives $ORIGIN
  std::string real_path;  // `path` with every symlink resolved inside the image
  uint64_t size = 0;      // of the regular file
  LibrarySource source = LibrarySource::kPath;
};

class LibraryResolver {
 public:
  // `tree` must outlive the resolver; `cache` may be null (no /etc/ld.so.cache in the image)
  // and must outlive it otherwise.
  LibraryResolver(const FileTree* tree, const LdSoCache* cache, Abi abi);

  // The file `needed` loads when the object chain[0] needs it; chain[i + 1] is the object
  // that loaded chain[i], the last one the executable (at least one element). NotFound if
  // no candidate exists (the message lists what was searched); tree errors other than
  // NotFound are returned as they are.
  absl::StatusOr<ResolvedLibrary> Resolve(std::string_view needed,
                                          std::span<const LoaderObject> chain) const;

  // Every existing candidate in search order, distinct by real_path, at most `max`: ld.so
  // skips a file of the wrong class or machine and goes on searching, and so does
  // WalkDependencies with these.
  absl::StatusOr<std::vector<ResolvedLibrary>> Candidates(std::string_view needed,
                                                          std::span<const LoaderObject> chain,
                                                          size_t max = 8) const;

  // `text` with $ORIGIN/${ORIGIN} → origin, $LIB → Abi::lib, $PLATFORM → Abi::platform;
  // other '$' are kept. nullopt when a token has no value.
  std::optional<std::string> ExpandTokens(std::string_view text, std::string_view origin) const;

  const Abi& abi() const { return abi_; }

 private:
  const FileTree* tree_;
  const LdSoCache* cache_;
  Abi abi_;
};

// The directory part of `path` as ld.so computes $ORIGIN ("/usr/lib/x.so" → "/usr/lib",
// "/x" → "/").
std::string DirName(std::string_view path);

}  // namespace lazypull::elf

#endif  // LAZYPULL_FETCHER_ELF_LIBRARY_RESOLVER_H_
