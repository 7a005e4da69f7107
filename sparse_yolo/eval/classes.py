"""How labelled datasets map onto the detector's COCO-80 class ids.

Class mapping tables (the README cites these):

``VISDRONE_TO_COCO`` (VisDrone-DET category -> COCO-80 id; ``None`` = dropped):

    | VisDrone category    | COCO-80 class                  |
    |----------------------|--------------------------------|
    | 0 ignored region     | ignore region (not an object)  |
    | 1 pedestrian         | 0 person                       |
    | 2 people             | 0 person                       |
    | 3 bicycle            | 1 bicycle                      |
    | 4 car                | 2 car                          |
    | 5 van                | 2 car                          |
    | 6 truck              | 7 truck                        |
    | 7 tricycle           | 3 motorcycle                   |
    | 8 awning-tricycle    | 3 motorcycle                   |
    | 9 bus                | 5 bus                          |
    | 10 motor             | 3 motorcycle                   |
    | 11 others            | dropped                        |

    Rows with score 0 are ignore regions whatever their category.

``DOTA_TO_COCO`` (DOTA v1.0 / v1.5 / v2.0 class -> COCO-80 id; ``None`` = dropped):

    | DOTA class          | COCO-80 class             |
    |---------------------|---------------------------|
    | plane               | 4 airplane                |
    | ship                | 8 boat                    |
    | small-vehicle       | 2 car                     |
    | large-vehicle       | 7 truck                   |
    | storage-tank        | dropped                   |
    | baseball-diamond    | dropped                   |
    | tennis-court        | dropped                   |
    | basketball-court    | dropped                   |
    | ground-track-field  | dropped                   |
    | harbor              | dropped                   |
    | bridge              | dropped                   |
    | helicopter          | dropped (no COCO class)   |
    | roundabout          | dropped                   |
    | soccer-ball-field   | dropped                   |
    | swimming-pool       | dropped                   |
    | container-crane     | dropped (v1.5 only)       |
    | airport             | dropped (v2.0 only)       |
    | helipad             | dropped (v2.0 only)       |

    Oriented boxes become the axis-aligned box of their four corners. ``difficult=1`` objects of
    a kept class become ignore regions; objects of a dropped class vanish entirely. Unknown class
    names are an error rather than silently dropped.

"""

from __future__ import annotations

VISDRONE_IGNORE_CATEGORY = 0
VISDRONE_TO_COCO: dict[int, int | None] = {
    1: 0,  # pedestrian -> person
    2: 0,  # people -> person
    3: 1,  # bicycle -> bicycle
    4: 2,  # car -> car
    5: 2,  # van -> car
    6: 7,  # truck -> truck
    7: 3,  # tricycle -> motorcycle
    8: 3,  # awning-tricycle -> motorcycle
    9: 5,  # bus -> bus
    10: 3,  # motor -> motorcycle
    11: None,  # others -> dropped
}

DOTA_TO_COCO: dict[str, int | None] = {
    "plane": 4,
    "ship": 8,
    "small-vehicle": 2,
    "large-vehicle": 7,
    "storage-tank": None,
    "baseball-diamond": None,
    "tennis-court": None,
    "basketball-court": None,
    "ground-track-field": None,
    "harbor": None,
    "bridge": None,
    "helicopter": None,
    "roundabout": None,
    "soccer-ball-field": None,
    "swimming-pool": None,
    "container-crane": None,
    "airport": None,
    "helipad": None,
}

# Names of the COCO-80 ids the mapped datasets can produce.
COCO_NAMES: dict[int, str] = {
    0: "person",
    1: "bicycle",
    2: "car",
    3: "motorcycle",
    4: "airplane",
    5: "bus",
    7: "truck",
    8: "boat",
}
