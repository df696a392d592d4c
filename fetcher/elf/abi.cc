#include "fetcher/elf/abi.h"

namespace lazypull::elf {
namespace {

constexpr uint32_t kEfArmAbiFloatHard = 0x400;
constexpr uint32_t kEfRiscvFloatAbiMask = 0x6;
constexpr uint32_t kEfRiscvFloatAbiDouble = 0x4;

}  // namespace

Abi AbiForElf(const ElfInfo& info) {
  Abi abi;
  abi.machine = info.machine;
  abi.is_64 = info.is_64;
  abi.big_endian = info.big_endian;
  const int32_t libc6 = kFlagElfLibc6;
  switch (info.machine) {
    case kEmX8664:
      if (info.is_64) {
        abi.triplet = "x86_64-linux-gnu";
        abi.cache_flags = {kFlagX8664Lib64 | libc6};
        abi.platform = "x86_64";
      } else {
        abi.triplet = "x86_64-linux-gnux32";
        abi.cache_flags = {kFlagX8664Libx32 | libc6};
        abi.platform = "x86_64";
      }
      break;
    case kEm386:
      abi.triplet = "i386-linux-gnu";
      abi.cache_flags = {kFlagElf, libc6};  // the generic _dl_cache_check_flags
      abi.platform = "i686";
      break;
    case kEmAarch64:
      if (info.is_64) {
        abi.triplet = info.big_endian ? "aarch64_be-linux-gnu" : "aarch64-linux-gnu";
        abi.cache_flags = {kFlagAarch64Lib64 | libc6};
        abi.platform = info.big_endian ? "aarch64_be" : "aarch64";
      }
      break;
    case kEmArm:
      // Unmarked objects are accepted by either float ABI (arm/dl-cache.h).
      if (info.flags & kEfArmAbiFloatHard) {
        abi.triplet = "arm-linux-gnueabihf";
        abi.cache_flags = {kFlagArmLibhf | libc6, libc6};
      } else {
        abi.triplet = "arm-linux-gnueabi";
        abi.cache_flags = {kFlagArmLibsf | libc6, libc6};
      }
      abi.platform = "v7l";
      break;
    case kEmPpc64:
      abi.triplet = info.big_endian ? "powerpc64-linux-gnu" : "powerpc64le-linux-gnu";
      abi.cache_flags = {kFlagPowerpcLib64 | libc6};
      break;
    case kEmS390:
      if (info.is_64) {
        abi.triplet = "s390x-linux-gnu";
        abi.cache_flags = {kFlagS390Lib64 | libc6};
      }
      break;
    case kEmRiscv:
      if (info.is_64) {
        abi.triplet = "riscv64-linux-gnu";
        bool dbl = (info.flags & kEfRiscvFloatAbiMask) == kEfRiscvFloatAbiDouble;
        abi.cache_flags = {(dbl ? kFlagRiscvFloatAbiDouble : kFlagRiscvFloatAbiSoft) | libc6};
        abi.platform = "riscv64";
      }
      break;
    default:
      break;
  }
  abi.lib = abi.triplet.empty() ? (info.is_64 ? "lib64" : "lib") : "lib/" + abi.triplet;
  if (!abi.triplet.empty()) {
    abi.default_dirs.push_back("/lib/" + abi.triplet);
    abi.default_dirs.push_back("/usr/lib/" + abi.triplet);
  }
  if (info.is_64) {
    abi.default_dirs.push_back("/lib64");
    abi.default_dirs.push_back("/usr/lib64");
  }
  abi.default_dirs.push_back("/lib");
  abi.default_dirs.push_back("/usr/lib");
  return abi;
}

bool CompatibleElf(const ElfInfo& exe, const ElfInfo& lib) {
  return exe.is_64 == lib.is_64 && exe.big_endian == lib.big_endian && exe.machine == lib.machine;
}

}  // namespace lazypull::elf
