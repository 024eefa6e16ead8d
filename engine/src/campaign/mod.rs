//! Campaigns, the pure part: the campaign and its data fields, participants as uploads
//! deliver them (API bodies and streamed CSV files), and when a planned communication
//! may start. No store, actors or HTTP here: those layers call into this one.

mod csv_import;
mod model;
mod participant;
mod progress;
mod records;
mod schedule;

pub use csv_import::{CsvError, CsvImport, RowError, MAX_COLUMNS, MAX_ROW_BYTES};
pub use model::{
    is_blank, system_fields, validate_fields, Campaign, CampaignId, CampaignStatus, CustomerKey,
    DataField, FieldLevel, FieldType,
};
pub use participant::{merge, CheckedParticipant, ParticipantInput};
pub use progress::{
    CampaignStats, CommunicationChange, CommunicationCount, CommunicationId, CommunicationRecord,
    CommunicationStatus, NodeCount, ParticipantEvent, ParticipantStep, PendingTrigger, StepOutcome,
};
pub use records::{
    CampaignRecord, CustomerId, CustomerRecord, FlowRecord, ParticipantId, ParticipantQuery,
    ParticipantRecord, ParticipantStatus, UploadId, UploadRecord, UploadRowError, UploadStatus,
    Upserted,
};
pub use schedule::{
    expires_at, next_start, parse_duration_hhmm, parse_time_of_day, parse_timezone, resolve_local,
    today_in, ScheduleBase, Window,
};
