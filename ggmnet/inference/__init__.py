"""From a trained network to maps and scores: the no-gravity rules and the outcrop prior (:mod:`.rules`), tiled
prediction (:mod:`.tiling`), window scores (:mod:`.scoring`), calibration (:mod:`.calibration`), ``ggm-evaluate``
(:mod:`.evaluate`), ``ggm-predict`` (:mod:`.predict`) and its GIS layers (:mod:`.gis`)."""
