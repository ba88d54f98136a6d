"""The runtime's commands: ``edgevpr query``, ``edgevpr index ...`` and ``edgevpr localize``
(torch-free, like everything they call)."""
