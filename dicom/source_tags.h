/*
 * source_tags.h — internal to dicom/: which tag fills which field of
 * cxr_source (cxr_dicom.h). One table for the two sides that must agree:
 * dcmtk_shim.cpp reads the attributes into a cxr_source, sr_writer.cpp puts
 * them back into the data set a report is built from. X-macros over
 * (group, element, field); COPIED are the patient/study attributes the
 * report header copies, in the order it copies them.
 */
#ifndef CXR_SOURCE_TAGS_H
#define CXR_SOURCE_TAGS_H

#define CXR_SOURCE_COPIED(X)                                                                            \
    X(0x0010, 0x0010, patient_name) X(0x0010, 0x0020, patient_id) X(0x0010, 0x0021, issuer_of_patient_id) \
    X(0x0010, 0x0030, patient_birth_date) X(0x0010, 0x0040, patient_sex) X(0x0020, 0x000D, study_uid)    \
    X(0x0008, 0x0020, study_date) X(0x0008, 0x0030, study_time) X(0x0008, 0x0050, accession_number)      \
    X(0x0008, 0x0090, referring_physician) X(0x0020, 0x0010, study_id) X(0x0008, 0x1030, study_description)

/* every plain attribute: the copied ones, the image's identity and its image
   library entry descriptors */
#define CXR_SOURCE_ATTRS(X)                                                                               \
    CXR_SOURCE_COPIED(X)                                                                                  \
    X(0x0008, 0x0016, sop_class_uid) X(0x0008, 0x0018, sop_instance_uid) X(0x0020, 0x000E, series_uid)    \
    X(0x0008, 0x0060, modality) X(0x0018, 0x0015, body_part) X(0x0020, 0x0062, image_laterality)          \
    X(0x0008, 0x0023, content_date) X(0x0008, 0x0033, content_time) X(0x0008, 0x0022, acquisition_date)   \
    X(0x0008, 0x0032, acquisition_time) X(0x0020, 0x0052, frame_of_reference_uid) X(0x0028, 0x0010, rows) \
    X(0x0028, 0x0011, columns) X(0x0020, 0x0020, patient_orientation) X(0x0018, 0x1164, imager_pixel_spacing) \
    X(0x0018, 0x1510, positioner_primary_angle) X(0x0018, 0x1511, positioner_secondary_angle)

/* the attributes of a code item (cxr_code_attrs) */
#define CXR_SOURCE_CODE(X)                                                                                \
    X(0x0008, 0x0100, value) X(0x0008, 0x0102, scheme) X(0x0008, 0x0103, version) X(0x0008, 0x0104, meaning) \
    X(0x0008, 0x010F, context_id) X(0x0008, 0x0105, mapping_resource) X(0x0008, 0x0106, context_version)  \
    X(0x0008, 0x010B, extension_flag) X(0x0008, 0x0107, local_version)                                    \
    X(0x0008, 0x010D, extension_creator_uid) X(0x0008, 0x0117, context_uid)

#endif
