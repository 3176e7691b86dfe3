return GpuTransformer.Cli.CliApp.Run(args);
