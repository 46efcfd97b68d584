"""Channel adapters: one module per channel, all behind :class:`channels.base.ChannelAdapter`."""
