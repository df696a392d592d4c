// Structured logging: one JSON object per line on stderr.
//
// Every line has "ts" (RFC 3339, UTC), "level" and "msg"; callers add fields as a JSON object.
// Thread-safe. Secrets (passwords, tokens, Authorization headers) must never be passed in.
#ifndef LAZYPULL_BASE_LOGGING_H_
#define LAZYPULL_BASE_LOGGING_H_

#include <string_view>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace lazypull {

enum class LogLevel { kDebug = 0, kInfo = 1, kWarn = 2, kError = 3 };

// Parses "debug", "info", "warn"/"warning", "error" (case-sensitive, as containerd does).
// Returns InvalidArgument for anything else.
absl::StatusOr<LogLevel> ParseLogLevel(std::string_view text);

// Sets the minimum level that is written. Lines below it cost one comparison.
// Safe to call at any time from any thread.
void SetLogLevel(LogLevel level);
LogLevel GetLogLevel();

// Writes one JSON line if `level` is enabled. `fields` must be a JSON object (or null).
void Log(LogLevel level, std::string_view msg, const nlohmann::json& fields = nullptr);

inline void LogDebug(std::string_view msg, const nlohmann::json& f = nullptr) {
  Log(LogLevel::kDebug, msg, f);
}
inline void LogInfo(std::string_view msg, const nlohmann::json& f = nullptr) {
  Log(LogLevel::kInfo, msg, f);
}
inline void LogWarn(std::string_view msg, const nlohmann::json& f = nullptr) {
  Log(LogLevel::kWarn, msg, f);
}
inline void LogError(std::string_view msg, const nlohmann::json& f = nullptr) {
  Log(LogLevel::kError, msg, f);
}

}  // namespace lazypull

#endif  // LAZYPULL_BASE_LOGGING_H_
