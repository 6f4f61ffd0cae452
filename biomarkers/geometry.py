"""Image geometry: the one place where DICOM LPS meets NIfTI RAS.

Conventions
-----------
* Arrays are indexed ``[i, j, k]`` where ``i`` runs along DICOM image *columns*
  (the first ImageOrientationPatient vector, "row direction"), ``j`` along image
  *rows* (second IOP vector) and ``k`` along the slice normal, in the order of
  increasing position along ``cross(row_dir, col_dir)``.  This is the NIfTI /
  nibabel ``(x, y, z)`` index order and SimpleITK's ``GetSize()`` order.
* :class:`Grid` stores world geometry in **DICOM patient coordinates (LPS, mm)**:
  ``origin`` is the centre of voxel ``(0, 0, 0)``, ``direction`` a 3x3 matrix
  whose *columns* are the unit vectors of the i, j, k axes, ``spacing`` the
  voxel size in mm along i, j, k.
* NIfTI affines are **RAS** (nibabel convention). :func:`lps_to_ras` is the only
  conversion between the two and every module goes through :meth:`Grid.affine_ras`
  or :meth:`Grid.from_affine_ras`.

No other module flips axes or signs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

#: Diagonal that converts LPS to RAS (and back: it is its own inverse).
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])


def lps_to_ras(points_or_matrix: np.ndarray) -> np.ndarray:
    """Convert LPS coordinates (``(..., 3)`` points) or a 3x3 direction matrix to RAS."""
    a = np.asarray(points_or_matrix, dtype=float)
    if a.shape == (3, 3):
        return LPS_TO_RAS @ a
    return a * np.array([-1.0, -1.0, 1.0])


ras_to_lps = lps_to_ras  # the flip is an involution


@dataclass(frozen=True)
class Grid:
    """A regular voxel grid in DICOM patient space (LPS, mm).

    Attributes:
        shape: number of voxels along (i, j, k).
        spacing: voxel size in mm along (i, j, k).
        origin: LPS position (mm) of the centre of voxel (0, 0, 0).
        direction: 3x3 matrix, columns are the LPS unit vectors of the i, j, k axes.
    """

    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    direction: tuple[tuple[float, ...], ...]

    # ----------------------------------------------------------------- builders
    @classmethod
    def from_dicom(
        cls,
        rows: int,
        columns: int,
        pixel_spacing: Sequence[float],
        image_orientation: Sequence[float],
        positions: Sequence[Sequence[float]],
        slice_spacing: float | None = None,
    ) -> "Grid":
        """Build the grid of a stack of DICOM slices.

        Args:
            rows, columns: DICOM Rows / Columns.
            pixel_spacing: DICOM PixelSpacing ``[row spacing (between rows, along j),
                column spacing (between columns, along i)]`` in mm.
            image_orientation: DICOM ImageOrientationPatient (6 floats, LPS).
            positions: ImagePositionPatient of every slice (LPS, mm), already sorted
                by increasing position along the slice normal.
            slice_spacing: spacing along k in mm; default: mean distance between
                consecutive positions projected on the normal (1.0 for one slice).
        """
        iop = np.asarray(image_orientation, dtype=float)
        row_dir, col_dir = iop[:3], iop[3:]
        normal = np.cross(row_dir, col_dir)
        pos = np.asarray(positions, dtype=float).reshape(-1, 3)
        if slice_spacing is None:
            if len(pos) > 1:
                d = pos @ normal
                slice_spacing = float((d[-1] - d[0]) / (len(pos) - 1))
            else:
                slice_spacing = 1.0
        # k axis: from first to last slice (handles gantry tilt: the k axis is not
        # the normal then, it follows the slice positions)
        if len(pos) > 1:
            kvec = (pos[-1] - pos[0]) / (len(pos) - 1)
            kdir = kvec / np.linalg.norm(kvec)
            kspacing = float(np.linalg.norm(kvec))
        else:
            kdir, kspacing = normal, float(slice_spacing)
        direction = np.column_stack([row_dir, col_dir, kdir])
        return cls(
            shape=(int(columns), int(rows), int(len(pos))),
            spacing=(float(pixel_spacing[1]), float(pixel_spacing[0]), kspacing),
            origin=tuple(float(x) for x in pos[0]),
            direction=tuple(tuple(float(x) for x in r) for r in direction),
        )

    @classmethod
    def from_affine_ras(cls, affine: np.ndarray, shape: Sequence[int]) -> "Grid":
        """Build a grid from a NIfTI (RAS) affine and a 3-D shape."""
        a = np.asarray(affine, dtype=float)
        m_lps = LPS_TO_RAS @ a[:3, :3]
        spacing = np.linalg.norm(m_lps, axis=0)
        direction = m_lps / spacing
        origin = lps_to_ras(a[:3, 3])
        return cls(
            shape=tuple(int(s) for s in shape[:3]),
            spacing=tuple(float(s) for s in spacing),
            origin=tuple(float(x) for x in origin),
            direction=tuple(tuple(float(x) for x in r) for r in direction),
        )

    @classmethod
    def from_sitk(cls, image) -> "Grid":
        """Build a grid from a SimpleITK image (SimpleITK works in LPS)."""
        return cls(
            shape=tuple(int(s) for s in image.GetSize()),
            spacing=tuple(float(s) for s in image.GetSpacing()),
            origin=tuple(float(s) for s in image.GetOrigin()),
            direction=tuple(
                tuple(float(x) for x in r) for r in np.asarray(image.GetDirection()).reshape(3, 3)
            ),
        )

    # ----------------------------------------------------------------- views
    @property
    def direction_matrix(self) -> np.ndarray:
        return np.asarray(self.direction, dtype=float)

    def affine_lps(self) -> np.ndarray:
        """4x4 matrix mapping voxel index (i, j, k, 1) to LPS mm."""
        a = np.eye(4)
        a[:3, :3] = self.direction_matrix * np.asarray(self.spacing)
        a[:3, 3] = self.origin
        return a

    def affine_ras(self) -> np.ndarray:
        """4x4 NIfTI affine mapping voxel index (i, j, k, 1) to RAS mm."""
        a = self.affine_lps()
        a[:3, :] = LPS_TO_RAS @ a[:3, :]
        return a

    def index_to_lps(self, ijk: np.ndarray) -> np.ndarray:
        """Continuous voxel indices ``(..., 3)`` to LPS mm."""
        a = self.affine_lps()
        return np.asarray(ijk, dtype=float) @ a[:3, :3].T + a[:3, 3]

    def lps_to_index(self, xyz: np.ndarray) -> np.ndarray:
        """LPS mm ``(..., 3)`` to continuous voxel indices."""
        a = self.affine_lps()
        inv = np.linalg.inv(a[:3, :3])
        return (np.asarray(xyz, dtype=float) - a[:3, 3]) @ inv.T

    @property
    def voxel_volume_ml(self) -> float:
        """Volume of one voxel in millilitres (cm^3)."""
        m = self.direction_matrix * np.asarray(self.spacing)
        return float(abs(np.linalg.det(m))) / 1000.0

    def is_oblique(self, tol: float = 1e-4) -> bool:
        """True when an axis is not aligned with a patient axis."""
        d = np.abs(self.direction_matrix)
        return bool(np.any((d > tol) & (d < 1 - tol)))

    def almost_equal(self, other: "Grid", atol_mm: float = 1e-3, atol_dir: float = 1e-5) -> bool:
        """Same shape, origin/spacing within ``atol_mm`` and direction within ``atol_dir``."""
        return (
            tuple(self.shape) == tuple(other.shape)
            and np.allclose(self.spacing, other.spacing, atol=atol_mm)
            and np.allclose(self.origin, other.origin, atol=atol_mm)
            and np.allclose(self.direction_matrix, other.direction_matrix, atol=atol_dir)
        )

    def mismatch(self, other: "Grid", atol_mm: float = 1e-3, atol_dir: float = 1e-5) -> str | None:
        """A human-readable description of how ``other`` differs, or None if equal."""
        if tuple(self.shape) != tuple(other.shape):
            return f"shape {tuple(other.shape)} != image shape {tuple(self.shape)}"
        if not np.allclose(self.spacing, other.spacing, atol=atol_mm):
            return f"spacing {other.spacing} != image spacing {self.spacing} (mm)"
        if not np.allclose(self.origin, other.origin, atol=atol_mm):
            return f"origin {other.origin} != image origin {self.origin} (LPS mm)"
        if not np.allclose(self.direction_matrix, other.direction_matrix, atol=atol_dir):
            return "direction cosines differ from the image's"
        return None

    @classmethod
    def from_dict(cls, d: dict) -> "Grid":
        """Inverse of :meth:`to_dict` (e.g. the ``geometry`` of an ingest sidecar; LPS, mm)."""
        return cls(tuple(int(x) for x in d["shape"]), tuple(d["spacing"]), tuple(d["origin_lps"]),
                   tuple(tuple(r) for r in d["direction_lps"]))

    def to_dict(self) -> dict:
        """``shape``, ``spacing`` (mm), ``origin_lps`` (mm), ``direction_lps`` (rows of :attr:`direction`)."""
        return {
            "shape": list(self.shape),
            "spacing": list(self.spacing),
            "origin_lps": list(self.origin),
            "direction_lps": [list(r) for r in self.direction],
        }


# --------------------------------------------------------------------- NIfTI I/O
def nifti_image(array: np.ndarray, grid: Grid, like=None):
    """A clean ``nibabel.Nifti1Image`` for ``array`` on ``grid``.

    The header carries only geometry (qform = sform = grid affine, code 1 "scanner"),
    units mm, and nothing from the source (no ``descrip``, ``aux_file``, ``db_name``).
    With ``like`` (a Nifti1Image, e.g. the image a mask belongs to) the affine and
    qform/sform of ``like`` are copied **exactly**, so a mask inherits its image's
    header geometry bit for bit.
    """
    import nibabel as nib

    if tuple(array.shape[:3]) != tuple(grid.shape):
        raise ValueError(f"array shape {array.shape} does not match grid shape {grid.shape}")
    if like is not None:
        affine = like.affine
    else:
        affine = grid.affine_ras()
    img = nib.Nifti1Image(array, affine)
    hdr = img.header
    if like is not None:
        hdr.set_qform(like.header.get_qform(), code=int(like.header["qform_code"]))
        hdr.set_sform(like.header.get_sform(), code=int(like.header["sform_code"]))
        hdr["pixdim"][1:4] = like.header["pixdim"][1:4]
        hdr["quatern_b"] = like.header["quatern_b"]
        hdr["quatern_c"] = like.header["quatern_c"]
        hdr["quatern_d"] = like.header["quatern_d"]
        hdr["qoffset_x"] = like.header["qoffset_x"]
        hdr["qoffset_y"] = like.header["qoffset_y"]
        hdr["qoffset_z"] = like.header["qoffset_z"]
        hdr["pixdim"][0] = like.header["pixdim"][0]
    else:
        hdr.set_qform(affine, code=1)
        hdr.set_sform(affine, code=1)
    hdr.set_xyzt_units("mm", "sec")
    hdr["descrip"] = b""
    hdr["aux_file"] = b""
    hdr["db_name"] = b""
    return img


def read_nifti(path) -> tuple[np.ndarray, Grid]:
    """Read a NIfTI file: (array in i,j,k order, Grid in LPS)."""
    import nibabel as nib

    img = nib.load(str(path))
    arr = np.asanyarray(img.dataobj)
    return arr, Grid.from_affine_ras(img.affine, arr.shape)


def grid_of_nifti(path) -> Grid:
    """Geometry of a NIfTI file without reading its voxels."""
    import nibabel as nib

    img = nib.load(str(path))
    return Grid.from_affine_ras(img.affine, img.shape)
