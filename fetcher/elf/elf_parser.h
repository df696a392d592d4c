// ParseElf: what a loader needs to know about an ELF file, from whatever bytes of it are
// present: class, type, machine, the PT_LOAD file ranges, PT_INTERP, and the dynamic
// section's DT_NEEDED / DT_SONAME / DT_RPATH / DT_RUNPATH / DT_FLAGS_1.
//
// Incremental by design. A lazy read brings the first bytes of a file; the program headers
// are nearly always in them, the dynamic section often is not (python3.11's sits in its last
// chunk). ParseElf never reads outside the bytes it was given: when something it needs is
// absent it returns the ranges still missing (ElfInfo::missing) and the caller fetches them
// and calls again with more bytes. Each call asks only for bytes not yet held, so the rounds
// end: at most header → program headers and PT_INTERP → dynamic section → strings.
//
// Meant use on a lazy read's miss path (the wiring lives in LayerReader):
//   1. The first chunk of a regular file arrives (the read that execve or ld.so makes starts
//      at offset 0). If IsElfMagic(first bytes) is false, stop: nothing here costs more.
//   2. Put the arrived bytes in a FileBytes and call ParseElf. Never do this on the FUSE
//      thread that waits for the read: hand the bytes to the prefetch executor and reply.
//   3. On the executor: while !info.complete(), fetch info.missing (one multi-range
//      request; foreground priority but after the read that triggered it) and parse again.
//      ReadElf() is that loop over a synchronous reader.
//   4. Fetch info.LoadRanges() (what mmap will touch), and hand the object to
//      WalkDependencies (dependency_walk.h) for PT_INTERP and DT_NEEDED, recursively; each
//      level's files are fetched in parallel, so the reader's serial misses become at most
//      one per level of the dependency graph.
//   A parse error only means "no ELF prefetch for this file": log it at debug level and go
//   on; the read itself was already served.
//
// Untrusted input: every offset and size is checked against the file size and the bytes
// held; counts are bounded (ElfLimits); strings are bounded and must be NUL-terminated
// inside their table. Errors: InvalidArgument "not an ELF file" when the magic is absent (the
// common case: callers test IsElfMagic first); DataLoss for a malformed ELF (bad class,
// truncated header, a segment past the end of the file, ...); ResourceExhausted when a
// count or length exceeds ElfLimits. Messages name the field and offset.
//
// Thread-safety: pure functions over their arguments.
#ifndef LAZYPULL_FETCHER_ELF_ELF_PARSER_H_
#define LAZYPULL_FETCHER_ELF_ELF_PARSER_H_

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "fetcher/elf/file_bytes.h"
#include "lazypull/blob_reader.h"

namespace lazypull::elf {

// e_type values.
inline constexpr uint16_t kEtRel = 1;
inline constexpr uint16_t kEtExec = 2;
inline constexpr uint16_t kEtDyn = 3;
// e_machine values the resolver knows (abi.h).
inline constexpr uint16_t kEm386 = 3;
inline constexpr uint16_t kEmArm = 40;
inline constexpr uint16_t kEmPpc64 = 21;
inline constexpr uint16_t kEmS390 = 22;
inline constexpr uint16_t kEmX8664 = 62;
inline constexpr uint16_t kEmAarch64 = 183;
inline constexpr uint16_t kEmRiscv = 243;
// DT_FLAGS_1 bit: do not search the default directories or ld.so.cache for dependencies.
inline constexpr uint64_t kDf1Nodeflib = 0x800;

struct ElfLimits {
  uint32_t max_program_headers = 512;
  uint32_t max_dynamic_entries = 4096;  // scanned before a DT_NULL must have appeared
  uint32_t max_needed = 256;            // DT_NEEDED entries of one object
  uint32_t max_string = 4096;           // bytes of one string (PATH_MAX), NUL excluded
  uint32_t max_interp = 4096;           // PT_INTERP size, NUL included
};

struct LoadSegment {
  uint64_t offset = 0;  // p_offset
  uint64_t file_size = 0;
  uint64_t vaddr = 0;
  uint64_t mem_size = 0;
  uint32_t flags = 0;  // PF_R 4 | PF_W 2 | PF_X 1
};

struct ElfInfo {
  uint64_t file_size = 0;
  // Header: valid once `have_header`.
  bool have_header = false;
  bool is_64 = false;
  bool big_endian = false;
  uint16_t type = 0;     // e_type: kEtExec, kEtDyn, ...
  uint16_t machine = 0;  // e_machine
  uint32_t flags = 0;    // e_flags (the ARM float ABI, the RISC-V float ABI)
  uint8_t os_abi = 0;

  // Program headers: valid once `have_program_headers`.
  bool have_program_headers = false;
  std::vector<LoadSegment> loads;  // PT_LOAD in program header order
  std::optional<ByteRange> interp_range;
  std::optional<ByteRange> dynamic_range;  // PT_DYNAMIC's bytes in the file

  // Contents: valid once complete().
  std::optional<std::string> interpreter;  // PT_INTERP path, e.g. /lib64/ld-linux-x86-64.so.2
  std::vector<std::string> needed;         // DT_NEEDED in order
  std::optional<std::string> soname;
  std::optional<std::string> rpath;  // absent when a DT_RUNPATH exists (ld.so ignores it then)
  std::optional<std::string> runpath;
  uint64_t flags_1 = 0;  // DT_FLAGS_1

  // Ranges still needed to finish parsing (disjoint, sorted, none held); empty = complete.
  std::vector<ByteRange> missing;

  bool complete() const { return missing.empty(); }
  // No PT_INTERP and no PT_DYNAMIC: the kernel runs it as is, nothing else to load.
  bool is_static() const { return have_program_headers && !interp_range && !dynamic_range; }
  // The file ranges the loader maps (PT_LOAD file bytes), sorted, merged and clipped to the
  // file. With `max_lazy_data`, read-only data segments (neither writable nor executable, and
  // not the first segment, which holds the dynamic symbols and relocations the loader reads)
  // larger than that are left out: constant data a program pages in where it reads it.
  std::vector<ByteRange> LoadRanges(uint64_t max_lazy_data = UINT64_MAX) const;
};

// True if `head` starts with "\x7fELF".
bool IsElfMagic(std::string_view head);

absl::StatusOr<ElfInfo> ParseElf(const FileBytes& bytes, const ElfLimits& limits = {});
// The same for a file of `file_size` bytes of which only head = file[0, head.size()) is held.
absl::StatusOr<ElfInfo> ParseElf(std::string_view head, uint64_t file_size,
                                 const ElfLimits& limits = {});

// Reads file[range] exactly (e.g. BlobReader::ReadAt of the file's bytes, or pread).
using RangeReader = std::function<absl::StatusOr<std::string>(ByteRange range)>;

// ParseElf, fetching info.missing through `read` until complete, at most `max_rounds` reads
// rounds (each round only asks for bytes not yet held). `bytes` keeps what was read. Reader
// errors are returned as they are; a short read is DataLoss.
absl::StatusOr<ElfInfo> ReadElf(FileBytes& bytes, const RangeReader& read,
                                const ElfLimits& limits = {}, int max_rounds = 8);

}  // namespace lazypull::elf

#endif  // LAZYPULL_FETCHER_ELF_ELF_PARSER_H_
