// RunGuarded: the boundary of every background job (graduation, preload, status writer,
// restore workers). An exception escaping a std::thread calls std::terminate and takes every
// lazy mount of the node with it; here it becomes one JSON error log line and a failed job
// (Internal), so the thread carries on.
//
// Thread-safe (stateless).
#ifndef LAZYPULL_BASE_BACKGROUND_GUARD_H_
#define LAZYPULL_BASE_BACKGROUND_GUARD_H_

#include <exception>
#include <string>
#include <string_view>
#include <type_traits>

#include "absl/status/status.h"
#include "base/logging.h"
#include "nlohmann/json.hpp"

namespace lazypull {

// Runs `job` and returns its result; if it throws, logs `what` with `fields` and the exception
// text and returns InternalError (for absl::Status / absl::StatusOr results) or nothing (void).
template <typename Job>
auto RunGuarded(std::string_view what, const nlohmann::json& fields, Job&& job) -> decltype(job()) {
  using Result = decltype(job());
  std::string error;
  try {
    return job();
  } catch (const std::exception& e) {
    error = e.what();
  } catch (...) {
    error = "unknown exception";
  }
  nlohmann::json f = fields.is_object() ? fields : nlohmann::json::object();
  f["job"] = what;
  f["exception"] = error;
  LogError("background job threw; it is marked failed", f);
  if constexpr (!std::is_void_v<Result>) {
    return Result(absl::InternalError(std::string(what) + " threw: " + error));
  }
}

}  // namespace lazypull

#endif  // LAZYPULL_BASE_BACKGROUND_GUARD_H_
