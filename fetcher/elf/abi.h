// Abi: the per-architecture facts the dynamic loader's search depends on, derived from the
// ELF header of the executable being started.
//
// Covers the glibc ports a container image plausibly ships (x86-64, i386, x32, aarch64,
// arm hard/soft float, ppc64le/ppc64, s390x, riscv64); other machines get no Abi and the
// resolver then skips ld.so.cache (its flags are unknown) but still searches RUNPATH/RPATH
// and the plain default directories.
#ifndef LAZYPULL_FETCHER_ELF_ABI_H_
#define LAZYPULL_FETCHER_ELF_ABI_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "fetcher/elf/elf_parser.h"

namespace lazypull::elf {

// ld.so.cache entry flags (glibc sysdeps/generic/ldconfig.h).
inline constexpr int32_t kFlagElf = 0x0001;
inline constexpr int32_t kFlagElfLibc6 = 0x0003;
inline constexpr int32_t kFlagX8664Lib64 = 0x0300;
inline constexpr int32_t kFlagS390Lib64 = 0x0400;
inline constexpr int32_t kFlagPowerpcLib64 = 0x0500;
inline constexpr int32_t kFlagX8664Libx32 = 0x0800;
inline constexpr int32_t kFlagArmLibhf = 0x0900;
inline constexpr int32_t kFlagAarch64Lib64 = 0x0a00;
inline constexpr int32_t kFlagArmLibsf = 0x0b00;
inline constexpr int32_t kFlagRiscvFloatAbiSoft = 0x0f00;
inline constexpr int32_t kFlagRiscvFloatAbiDouble = 0x1000;

struct Abi {
  uint16_t machine = 0;
  bool is_64 = false;
  bool big_endian = false;
  std::string triplet;  // Debian multiarch directory name, e.g. "x86_64-linux-gnu"
  // ld.so.cache entry flags this ABI's ld.so accepts (its _dl_cache_check_flags); empty when
  // unknown (the cache is then not used).
  std::vector<int32_t> cache_flags;
  std::string platform;  // $PLATFORM (AT_PLATFORM), e.g. "x86_64"
  std::string lib;       // $LIB: Debian's ld.so expands it to "lib/<triplet>"
  // The directories searched last, in order: Debian multiarch first, then the lib64 layout of
  // Fedora and friends, then the plain ones; which exist depends on the image.
  std::vector<std::string> default_dirs;
};

// The Abi of a parsed ELF header (info.have_header). Machines not listed above get only the
// class-based default directories.
Abi AbiForElf(const ElfInfo& info);

// Whether an object with header `lib` can be loaded into a process whose executable has
// header `exe`: ld.so rejects (and searches on past) a library of another class, byte order
// or machine.
bool CompatibleElf(const ElfInfo& exe, const ElfInfo& lib);

}  // namespace lazypull::elf

#endif  // LAZYPULL_FETCHER_ELF_ABI_H_
