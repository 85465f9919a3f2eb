"""From a measured scan file to a reconstruction: the work behind ``invdiff reconstruct``.

``file.reconstruct_file(input, out, ...)`` is the whole pipeline of one file (read it, build its
operator, match the prior's intensity range, reconstruct, write atomically); the command line calls it.

Each kind of measured data has its own module (``sinogram`` for CT sinograms with ASTRA geometry,
``kspace`` for fastMRI-layout k-space); ``scale`` maps measured intensities onto a prior's
``data_range`` and estimates the measurement noise. The command line only parses arguments and
prints; a script calling these functions gets the same result.
"""
