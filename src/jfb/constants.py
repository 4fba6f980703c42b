"""Constants every layer shares, in a module that imports nothing of the project."""

#: Images are RGB throughout the pipeline; grey inputs are replicated (see ``jfb deblur``), and a
#: per-channel blur kernel has this many channels.
CHANNELS = 3
