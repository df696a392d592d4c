// lazypull: command-line entry point. Subcommands are registered from commands.h.
#include <string>

#include "CLI/CLI.hpp"
#include "base/logging.h"
#include "tools/commands.h"

int main(int argc, char** argv) {
  CLI::App app{"lazypull: lazy-pulling container image tools"};
  app.require_subcommand(1);
  std::string log_level = "info";
  app.add_option("--log-level", log_level, "debug|info|warn|error")->capture_default_str();
  int exit_code = 0;
  lazypull::tools::RegisterConvertCommand(app, &exit_code);
  lazypull::tools::RegisterIndexCommand(app, &exit_code);
  lazypull::tools::RegisterRpullCommand(app, &exit_code);
  lazypull::tools::RegisterStatusCommand(app, &exit_code);
  lazypull::tools::RegisterHealthCommand(app, &exit_code);
  app.parse_complete_callback([&] {
    auto level = lazypull::ParseLogLevel(log_level);
    if (level.ok()) lazypull::SetLogLevel(*level);
  });
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  return exit_code;
}
