"""The lessons' code: one package per notebook, named like it (lesson NN's code is in lNN_*).

A lesson imports the core (qlab), the kit (qlab.lab.kit), itself, and only lower-numbered lessons."""
