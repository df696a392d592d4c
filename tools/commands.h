// Subcommands of the `lazypull` binary. Each Register* function adds one CLI11 subcommand to
// `app` and binds its callback; the callback returns the process exit code through `*exit_code`
// (0 on success). A new subcommand is a new <name>_command.cc plus one line in
// lazypull_main.cc.
#ifndef LAZYPULL_TOOLS_COMMANDS_H_
#define LAZYPULL_TOOLS_COMMANDS_H_

#include "CLI/CLI.hpp"

namespace lazypull::tools {

// `lazypull convert --format estargz|zstd:chunked [--plain-http] [--prioritize FILE ...]
//  [--prioritize-list PATH] [--chunk-size N] [--optimize [--optimize-cmd CMD]
//  [--optimize-timeout 10s] [-v]] SRC DST`
void RegisterConvertCommand(CLI::App& app, int* exit_code);

// `lazypull index create [--span-size 4MiB] [--min-layer-size 10MiB] [--v1] [--plain-http]
//  [--platform P] [--work-dir DIR] SRC [DST]` (index_command.cc)
void RegisterIndexCommand(CLI::App& app, int* exit_code);

// `lazypull rpull [--address SOCK] [--namespace NS] [--snapshotter NAME] [--plain-http]
//  [--platform P] [--user U[:P]] [--config FILE] REF` (rpull_command.cc)
void RegisterRpullCommand(CLI::App& app, int* exit_code);

// `lazypull status [--root DIR] [--json]` (status_command.cc)
void RegisterStatusCommand(CLI::App& app, int* exit_code);

// `lazypull health [--address SOCK] [--timeout SECONDS]` (health_command.cc)
void RegisterHealthCommand(CLI::App& app, int* exit_code);

}  // namespace lazypull::tools

#endif  // LAZYPULL_TOOLS_COMMANDS_H_
