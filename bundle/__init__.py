# Copyright (c) the FusionNet bundle developers. Licensed under the Apache License, Version 2.0.
"""The project's own command line (``python -m bundle``): run the bundle's workflows, make the sample, verify."""
