"""The commands of ``flockwatch``, one module a command or command group; ``serving.cli``
attaches them to the root app."""
