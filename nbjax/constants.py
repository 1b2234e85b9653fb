"""Physical constants and unit conversions, with the exact values nanoBragg.c uses.

Lengths inside nbjax are metres, angles radians, wavelengths metres, unless a
name says otherwise (``_mm``, ``_deg``, ``_A``).
"""

import math

#: Classical electron radius squared (Thomson cross-section / (8 pi / 3)), m^2.
R_E_SQR_M2 = 7.94079248018965e-30
#: Avogadro's number, 1/mol (the value nanoBragg.c uses).
AVOGADRO = 6.02214179e23
#: Degrees per radian, computed as nanoBragg.c does (180 * M_1_PI) so that
#: angle conversions round to the same doubles.
RTD = 180.0 * (1.0 / math.pi)
#: hc in eV*Angstrom as used for -energy.
HC_EV_A = 12398.42
#: Forward-scattering structure factor of water (electrons) and its molar mass.
WATER_F = 2.57
WATER_MW_G_PER_MOL = 18.0
#: Default incident fluence of nanoBragg.c, photons/m^2.
DEFAULT_FLUENCE = 125932015286227086360700780544.0
#: Default distance of a generated point source from the sample, m.
SOURCE_DISTANCE_M = 10.0
