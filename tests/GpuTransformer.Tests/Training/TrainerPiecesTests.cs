using GpuTransformer.Cli.Commands;

namespace GpuTransformer.Tests.Training;

/// <summary>The small pieces <see cref="Trainer.Run"/> and the run commands are made of, without a device.</summary>
public sealed class TrainerPiecesTests
{
    [Fact]
    public void The_throughput_window_averages_the_last_steps_only()
    {
        var window = new ThroughputWindow(capacity: 2);
        Assert.Equal(0, window.TokensPerSecond);
        window.Add(100, 10);                       // a slow first step (compilation)
        Assert.Equal(10, window.TokensPerSecond);
        window.Add(100, 1);
        Assert.Equal(200 / 11.0, window.TokensPerSecond, 12);
        window.Add(300, 1);                        // the first step leaves the window
        Assert.Equal(200, window.TokensPerSecond);
        Assert.Throws<ArgumentOutOfRangeException>(() => new ThroughputWindow(0));
    }

    [Fact]
    public void The_time_limit_forecast_adds_the_smoothed_step_and_the_last_evaluation_and_checkpoint()
    {
        var forecast = new TimeLimitForecast();
        var limit = TimeSpan.FromSeconds(10);
        forecast.StepTook(1);                      // the first step is taken as it is
        Assert.False(forecast.Exceeds(8.5, limit));
        Assert.True(forecast.Exceeds(9.5, limit));
        forecast.StepTook(6);                      // 0.8 · 1 + 0.2 · 6 = 2: one slow step moves it a fifth of the way
        Assert.False(forecast.Exceeds(7.5, limit));
        Assert.True(forecast.Exceeds(8.5, limit));
        forecast.EvaluationTook(1);
        forecast.CheckpointTook(0.5);
        Assert.False(forecast.Exceeds(6, limit));  // 6 + 2 + 1 + 0.5 = 9.5
        Assert.True(forecast.Exceeds(7, limit));   // 10.5
    }

    [Theory]
    [InlineData("90", 90)]
    [InlineData("90s", 90)]
    [InlineData("7m", 420)]
    [InlineData("1.5h", 5400)]
    [InlineData("0:07:00", 420)]
    public void Durations_read_the_same_in_every_command(string text, double seconds) =>
        Assert.Equal(TimeSpan.FromSeconds(seconds), RunOptions.ParseDuration(text));

    [Fact]
    public void No_duration_is_no_limit_and_a_bad_one_is_named()
    {
        Assert.Null(RunOptions.ParseDuration(null));
        Assert.Null(RunOptions.ParseDuration("none"));
        Assert.Null(RunOptions.ParseDuration("0"));
        var error = Assert.Throws<ArgumentException>(() => RunOptions.ParseDuration("soon"));
        Assert.Contains("Cannot read the duration 'soon'", error.Message);
    }
}
