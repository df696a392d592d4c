// The wire protocol between lazypull and its FUSE holder (tools/fuse_holder/): one message per
// SOCK_SEQPACKET packet, an optional file descriptor attached with SCM_RIGHTS.
//
//   packet = header{magic u32, op u32, key_len u32, data_len u32} key data   (host byte order:
//            both ends run on the same node)
//
// Requests (daemon → holder) and their answers:
//   kPut(key, data = saved INIT request, fd = the /dev/fuse fd)  → kOk | kError(data = reason)
//   kGet(key)                                → kOk(data = INIT request, fd = a dup) | kNotFound
//   kForget(key)                             → kOk (also when unknown)
//   kList                                    → kEntry(key)... kEnd
// Keys are the mount targets (absolute paths).
//
// Thread-compatible functions; no state.
#ifndef LAZYPULL_MOUNT_FUSE_HOLDER_PROTOCOL_H_
#define LAZYPULL_MOUNT_FUSE_HOLDER_PROTOCOL_H_

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "base/unique_fd.h"

namespace lazypull::mount {

enum class HolderOp : uint32_t {
  kPut = 1,
  kGet = 2,
  kForget = 3,
  kList = 4,
  kOk = 100,
  kNotFound = 101,
  kEntry = 102,
  kEnd = 103,
  kError = 104,
};

// Largest key and data a message may carry (a key is a path; data an INIT request).
inline constexpr size_t kHolderMaxKey = 4096;
inline constexpr size_t kHolderMaxData = 4096;

struct HolderMessage {
  HolderOp op = HolderOp::kOk;
  std::string key;
  std::string data;
  UniqueFd fd;  // attached when valid
};

// Sends `m` on the connected socket `sock` (the fd, if any, is duplicated into the peer).
// InvalidArgument for oversized fields; Unavailable when the peer is gone.
absl::Status SendHolderMessage(int sock, const HolderMessage& m);

// Receives one message. Unavailable on EOF or a dead peer; DataLoss for a malformed packet
// (bad magic, lengths, truncation). An attached fd is owned by the result (close-on-exec).
absl::StatusOr<HolderMessage> RecvHolderMessage(int sock);

}  // namespace lazypull::mount

#endif  // LAZYPULL_MOUNT_FUSE_HOLDER_PROTOCOL_H_
