"""Where a robot was: tracks read from GPX, CSV, TUM, DJI subtitles, bags and photo EXIF,
sampled at frame times, and the tracks a localizer writes out."""
