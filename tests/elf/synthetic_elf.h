// Small synthetic ELF files, for the classes and byte orders this machine has no binaries of
// (elf tests) and as fuzz seeds (tests/fuzz/seed_gen.cc). Header-only, no test framework.
#ifndef LAZYPULL_TESTS_ELF_SYNTHETIC_ELF_H_
#define LAZYPULL_TESTS_ELF_SYNTHETIC_ELF_H_

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace lazypull::elf::testing {

// A minimal ELF file of either class and byte order: header, PT_LOAD covering the whole
// file, PT_INTERP (unless empty), PT_DYNAMIC with the given DT_NEEDED, DT_SONAME and DT_RUNPATH
// and its string table. The dynamic section sits at the end of the file so a short head
// leaves it out.
struct SyntheticElf {
  bool is_64 = true;
  bool big_endian = false;
  uint16_t machine = 62;
  uint16_t type = 3;
  std::string interp = "/lib/ld-test.so.1";
  std::vector<std::string> needed = {"liba.so.1", "libb.so.2"};
  std::string soname = "libsynthetic.so.1";
  std::string runpath = "$ORIGIN/../lib";
  uint64_t vaddr = 0x400000;
  uint64_t padding = 8192;  // zero bytes between the program headers and the strings
};

inline std::string BuildElf(const SyntheticElf& e) {
  std::string out;
  auto put = [&](uint64_t at, uint64_t v, int width) {
    if (out.size() < at + width) out.resize(at + width, '\0');
    for (int i = 0; i < width; ++i) {
      int shift = 8 * (e.big_endian ? width - 1 - i : i);
      out[at + i] = static_cast<char>((v >> shift) & 0xff);
    }
  };
  const uint64_t ehsize = e.is_64 ? 64 : 52;
  const uint64_t phentsize = e.is_64 ? 56 : 32;
  const int word = e.is_64 ? 8 : 4;
  const uint64_t phnum = e.interp.empty() ? 2 : 3;
  const uint64_t phoff = ehsize;
  uint64_t pos = phoff + phnum * phentsize;
  uint64_t interp_at = pos;
  if (!e.interp.empty()) pos += e.interp.size() + 1;
  pos += e.padding;
  // String table.
  std::string strtab(1, '\0');
  auto add = [&](const std::string& s) {
    uint64_t off = strtab.size();
    strtab += s;
    strtab += '\0';
    return off;
  };
  std::vector<std::pair<int64_t, uint64_t>> dyn;
  for (const std::string& n : e.needed) dyn.push_back({1, add(n)});
  if (!e.soname.empty()) dyn.push_back({14, add(e.soname)});
  if (!e.runpath.empty()) dyn.push_back({29, add(e.runpath)});
  uint64_t strtab_at = pos;
  pos += strtab.size();
  pos = (pos + 7) / 8 * 8;
  dyn.push_back({5, e.vaddr + strtab_at});
  dyn.push_back({10, strtab.size()});
  dyn.push_back({0, 0});
  uint64_t dyn_at = pos;
  uint64_t dyn_size = dyn.size() * 2 * word;
  uint64_t total = dyn_at + dyn_size;
  out.assign(total, '\0');
  out[0] = 0x7f;
  out[1] = 'E';
  out[2] = 'L';
  out[3] = 'F';
  out[4] = e.is_64 ? 2 : 1;
  out[5] = e.big_endian ? 2 : 1;
  out[6] = 1;
  put(16, e.type, 2);
  put(18, e.machine, 2);
  put(20, 1, 4);
  if (e.is_64) {
    put(32, phoff, 8);
    put(52, ehsize, 2);
    put(54, phentsize, 2);
    put(56, phnum, 2);
  } else {
    put(28, phoff, 4);
    put(40, ehsize, 2);
    put(42, phentsize, 2);
    put(44, phnum, 2);
  }
  auto phdr = [&](int i, uint32_t type, uint64_t off, uint64_t size, uint32_t flags) {
    uint64_t at = phoff + i * phentsize;
    put(at, type, 4);
    if (e.is_64) {
      put(at + 4, flags, 4);
      put(at + 8, off, 8);
      put(at + 16, e.vaddr + off, 8);
      put(at + 24, e.vaddr + off, 8);
      put(at + 32, size, 8);
      put(at + 40, size, 8);
    } else {
      put(at + 4, off, 4);
      put(at + 8, e.vaddr + off, 4);
      put(at + 12, e.vaddr + off, 4);
      put(at + 16, size, 4);
      put(at + 20, size, 4);
      put(at + 24, flags, 4);
    }
  };
  int i = 0;
  phdr(i++, 1, 0, total, 5);
  if (!e.interp.empty()) {
    phdr(i++, 3, interp_at, e.interp.size() + 1, 4);
    out.replace(interp_at, e.interp.size(), e.interp);
  }
  phdr(i++, 2, dyn_at, dyn_size, 6);
  out.replace(strtab_at, strtab.size(), strtab);
  for (size_t k = 0; k < dyn.size(); ++k) {
    put(dyn_at + k * 2 * word, static_cast<uint64_t>(dyn[k].first), word);
    put(dyn_at + k * 2 * word + word, dyn[k].second, word);
  }
  return out;
}

}  // namespace lazypull::elf::testing

#endif  // LAZYPULL_TESTS_ELF_SYNTHETIC_ELF_H_
