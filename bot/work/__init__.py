"""The work a job goes through: the worker pool that claims jobs, the runner that moves one through fetch ->
prepare -> clone -> answer, consent presses, previews and Say (the voice service), and the housekeeping timer."""
