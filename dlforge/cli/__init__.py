"""The command line: one thin command per verb, each calling one function of the API."""
